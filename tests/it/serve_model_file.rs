//! A served model can start from a file written by `ffd train --save`: its network replaces
//! the configured one, `/classify` answers exactly what the saved model answers, and learning
//! continues from it.
use crate::support;

use crate::support::{batch_json, small_config, start_server};
use ffd::ff::{Classifier, Model, NetworkConfig, TrainConfig, Trainer};
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
