//! A served model can start from a file written by `ffd train --save`: its network and its
//! read-out replace the configured ones, `/classify` answers exactly what the saved model answers, and learning
//! continues from it. `ffd serve --model FILE` over a data directory that holds a checkpoint
//! refuses to start, naming both, until the user chooses (`--reset` or no `--model`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support;
use crate::support::{batch_json, small_config, start_server};
use ffd::ff::{Classifier, Model, NetworkConfig, TrainConfig, Trainer};
use ffd::store::checkpoint::{self, Checkpoint, Counters};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_saved_model_and_keeps_learning() {
    let data = support::mnist_small();
    let net = NetworkConfig {
        hidden: vec![24, 20],
        ..Default::default()
    };
    let model = Model::new(net, &mut StdRng::seed_from_u64(3)).expect("valid config");
    let mut trainer = Trainer::new(model, TrainConfig::default(), 3).expect("valid config");
    for i in 0..300 {
        let (x, y) = data.train.sample(i);
        trainer.learn(x, y, false).expect("valid sample");
    }
    let model = trainer.into_model();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.safetensors");
    ffd::store::model_file::save_model(&path, &model, Some(&TrainConfig::default())).expect("save");

    let mut config = small_config();
    config.model_file = Some(path.clone());
    let s = start_server(config).await;
    let info = s.model().await;
    assert_eq!(info["layer_sizes"], json!([794, 24, 20]));
    assert_eq!(info["config"]["network"]["hidden"], json!([24, 20]));
    // The file was trained by goodness without a head: its read-out replaces the service's
    // default softmax head, which would answer from untrained (zero) weights.
    assert_eq!(info["config"]["train"]["classifier"], json!("goodness"));
    assert_eq!(info["config"]["train"]["train_head"], json!(false));
    assert_eq!(info["config"]["model_file"], json!(path));

    for i in 0..20 {
        let x = data.test.sample(i).0;
        let want = model
            .classify(x, Classifier::Goodness)
            .expect("valid features");
        let r = s.post("/classify", &json!({ "features": x })).await;
        let got: serde_json::Value = r.json().await.expect("JSON");
        assert_eq!(got["label"], want.label, "test sample {i}");
        assert_eq!(got["model_version"], 0);
    }

    assert_eq!(
        s.post("/learn", &batch_json(&data.train, 300..400))
            .await
            .status(),
        202
    );
    let info = s.wait_learned(100).await;
    assert!(info["model_version"].as_u64().expect("version") > 0);
    s.shutdown().await.expect("clean shutdown");
}

/// A model file of a `[24, 20]` network, and a trainer of the same network that has learned 50
/// samples (what a checkpoint of an earlier run holds).
fn model_file_and_trained(path: &Path) -> Trainer {
    let data = support::mnist_small();
    let net = NetworkConfig {
        hidden: vec![24, 20],
        ..Default::default()
    };
    let model = Model::new(net, &mut StdRng::seed_from_u64(5)).expect("valid config");
    ffd::store::model_file::save_model(path, &model, Some(&TrainConfig::default())).expect("save");
    let mut trainer = Trainer::new(model, TrainConfig::default(), 5).expect("valid config");
    for i in 0..50 {
        let (x, y) = data.train.sample(i);
        trainer.learn(x, y, false).expect("valid sample");
    }
    // A checkpoint holds a settled trainer: the last sample's update applied.
    trainer.settle();
    trainer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_file_over_a_checkpoint_is_refused_until_the_user_chooses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model_path = dir.path().join("model.safetensors");
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).expect("mkdir");
    let trainer = model_file_and_trained(&model_path);
    let checkpoint_path = checkpoint::write(
        &data_dir,
        &Checkpoint {
            trainer: trainer.state(),
            average: None,
            counters: Counters {
                last_seq: 50,
                high_water_seq: 50,
                samples_learned: 50,
                sleep_cycles: 0,
                model_version: 3,
                since_average: 0,
            },
        },
    )
    .expect("write a checkpoint");
    let model_arg = model_path.to_str().expect("UTF-8");
    let data_arg = data_dir.to_str().expect("UTF-8");

    // Both given: no silent choice. The error names both files and both ways out.
    let out = support::ffd_serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--model",
            model_arg,
            "--data-dir",
            data_arg,
        ],
        &[],
    )
    .output()
    .expect("ffd runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should refuse to start: {stderr}");
    assert!(stderr.contains(model_arg), "names the model file: {stderr}");
    assert!(
        stderr.contains(&*checkpoint_path.to_string_lossy()),
        "names the checkpoint: {stderr}"
    );
    assert!(
        stderr.contains("--reset") && stderr.contains("drop --model"),
        "says how to choose: {stderr}"
    );
    assert!(checkpoint_path.exists(), "the saved state is untouched");

    // `--reset`: the checkpoint is set aside and the model file is served, from version 0.
    let mut child = support::ffd_serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--model",
            model_arg,
            "--data-dir",
            data_arg,
            "--reset",
        ],
        &[],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("ffd starts");
    let stderr = child.stderr.take().expect("piped");
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if log["fields"]["message"] == "listening" {
                let _ = addr_tx.send(log["fields"]["addr"].as_str().map(str::to_owned));
            }
        }
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a `listening` log line")
        .expect("with the address");
    let model: serde_json::Value = reqwest::get(format!("http://{addr}/v1/model"))
        .await
        .expect("answer")
        .json()
        .await
        .expect("JSON");
    assert_eq!(model["layer_sizes"], json!([794, 24, 20]));
    assert_eq!(model["samples_learned"], 0, "the file, not the checkpoint");
    assert_eq!(model["model_version"], 0, "the file, not the checkpoint");
    assert!(!checkpoint_path.exists(), "the checkpoint was set aside");
    let set_aside = std::fs::read_dir(&data_dir)
        .expect("read the data directory")
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("discarded-"));
    assert!(set_aside, "into a discarded-* directory");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = child.wait().expect("ffd exits");
    reader.join().expect("the log reader ends");
    assert!(status.success(), "exits 0 on SIGTERM: {status:?}");
}
