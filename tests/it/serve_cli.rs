//! `ffd serve` as a user runs it: configuration layers (file → `FFD_*` environment → flags)
//! shown by `--print-config`; an invalid config fails at start naming the key; a real server
//! answers, logs JSON with `--log-format json`, and exits 0 on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use ffd::ff::ScheduleMode;

use crate::support::ffd_serve;
use ffd::service::Config;

#[test]
fn print_config_shows_every_layer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("ffd.toml");
    std::fs::write(
        &file,
        "seed = 7\n[network]\nhidden = [64]\n[train]\nschedule = \"sleep\"\n",
    )
    .expect("write");
    let out = ffd_serve(
        &[
            "--config",
            file.to_str().expect("UTF-8"),
            "--listen",
            "0.0.0.0:9999",
            "--print-config",
        ],
        &[("FFD_TRAIN__SCHEDULE", "interleaved"), ("FFD_SEED", "8")],
    )
    .output()
    .expect("ffd runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: Config = toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("TOML");
    assert_eq!(config.network.hidden, vec![64], "from the file");
    assert_eq!(
        config.train.schedule,
        ScheduleMode::Interleaved,
        "env beats the file"
    );
    assert_eq!(config.seed, 8, "env beats the file");
    assert_eq!(config.listen.to_string(), "0.0.0.0:9999", "the flag");
    assert_eq!(config.network.inputs, 784, "the embedded default");

    let out = ffd_serve(&["--print-config"], &[])
        .output()
        .expect("ffd runs");
    let config: Config = toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("TOML");
    assert_eq!(config, Config::default());
}

#[test]
fn invalid_config_fails_naming_the_key() {
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[("FFD_LEARNER__QUEUE_CAPACITY", "0")],
            "learner.queue_capacity",
        ),
        (&[("FFD_TRAIN__SCHEDULE", "nap")], "train.schedule"),
        (&[("FFD_LISTN", "0.0.0.0:1")], "listn"),
    ];
    for (env, key) in cases {
        let out = ffd_serve(&["--print-config"], env)
            .output()
            .expect("ffd runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{env:?} should fail");
        assert!(stderr.contains(key), "{env:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_and_exits_0_on_sigterm() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut child = ffd_serve(
        &["--listen", "127.0.0.1:0", "--log-format", "json"],
        &[
            ("FFD_NETWORK__HIDDEN", "[16]"),
            ("FFD_DATA_DIR", data.path().to_str().expect("UTF-8")),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("ffd starts");
    let stderr = child.stderr.take().expect("piped");
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let log: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|_| panic!("a JSON log line: {line}"));
            if log["fields"]["message"] == "listening" {
                let _ = addr_tx.send(log["fields"]["addr"].as_str().map(str::to_owned));
            }
            lines.push(line);
        }
        lines
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a `listening` log line")
        .expect("with the address");

    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .expect("answer");
    assert_eq!(health.status(), 200);
    let model: serde_json::Value = reqwest::get(format!("http://{addr}/v1/model"))
        .await
        .expect("answer")
        .json()
        .await
        .expect("JSON");
    assert_eq!(model["layer_sizes"], serde_json::json!([794, 16]));

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("no panic")
        .expect("ffd exits");
    let logs = reader.join().expect("reader thread");
    assert_eq!(status.code(), Some(0), "logs: {logs:#?}");
    assert!(
        logs.iter().any(|l| l.contains("SIGTERM")),
        "logs: {logs:#?}"
    );
}
