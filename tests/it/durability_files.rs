//! Damaged files in the data directory, as an operator would meet them after a crash or a
//! disk fault: a truncated or corrupt newest checkpoint is skipped for an older one (and the
//! WAL fills the gap); a torn or corrupt WAL record ends the log there; a checkpoint written
//! for another network stops the start with a message naming `--reset`, which sets the state
//! aside. Every case checks what `/v1/model` reports after the restart.
use crate::support;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::support::{batch_json, durable_config, start_server, TestServer};
use ffd::service::config::DurabilityMode;
use ffd::service::{Service, ServiceError};
use ffd::store::{checkpoint, wal};

/// Sends training samples `range` in batches of 10; every one must be acknowledged.
async fn learn(server: &TestServer, range: std::ops::Range<usize>) {
    let data = support::mnist_small();
    for start in range.clone().step_by(10) {
        let end = (start + 10).min(range.end);
        let r = server
            .post("/learn", &batch_json(&data.train, start..end))
            .await;
        assert_eq!(r.status(), 202);
    }
}

/// A first life: 50 samples, `/admin/checkpoint`, 30 more, graceful shutdown (which
/// checkpoints again at 80). Returns the checkpoint files, newest first.
async fn first_life(dir: &Path) -> Vec<PathBuf> {
    let server = start_server(durable_config(dir)).await;
    learn(&server, 0..50).await;
    server.wait_learned(50).await;
    let r = server
        .client
        .post(format!("{}/admin/checkpoint", server.url))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(body["last_seq"], 50, "{body}");
    assert!(Path::new(body["file"].as_str().expect("a path")).exists());
    learn(&server, 50..80).await;
    server.wait_learned(80).await;
    server.shutdown().await.expect("clean shutdown");
    let files: Vec<PathBuf> = checkpoint::list(dir)
        .expect("list")
        .into_iter()
        .map(|c| c.1)
        .collect();
    assert_eq!(
        files
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        [checkpoint::file_name(80), checkpoint::file_name(50)],
    );
    files
}

/// Restarts on `dir` and waits until everything recovered is learned; returns `/v1/model`.
async fn restart(dir: &Path) -> (TestServer, serde_json::Value) {
    let server = start_server(durable_config(dir)).await;
    let model = server
        .wait_for("the backlog learned", |m| m["queue_depth"] == 0)
        .await;
    (server, model)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_resumes_from_the_final_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    first_life(dir.path()).await;
    let (server, model) = restart(dir.path()).await;
    assert_eq!(model["samples_learned"], 80);
    // The served (averaged) weights came back: the same answer as a server that learned the
    // same 80 samples without stopping.
    let probe = serde_json::json!({ "features": support::mnist_small().test.sample(0).0 });
    let restored: serde_json::Value = server
        .post("/classify", &probe)
        .await
        .json()
        .await
        .expect("JSON");
    let other_dir = tempfile::tempdir().expect("temp dir");
    let uninterrupted = start_server(durable_config(other_dir.path())).await;
    learn(&uninterrupted, 0..80).await;
    uninterrupted.wait_learned(80).await;
    let expected: serde_json::Value = uninterrupted
        .post("/classify", &probe)
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(restored["scores"], expected["scores"]);
    uninterrupted.shutdown().await.expect("clean shutdown");
    assert_eq!(model["learned_seq"], 80);
    assert_eq!(model["last_seq"], 80);
    // Sequence numbers continue; they are never reused.
    learn(&server, 80..90).await;
    let model = server.wait_learned(90).await;
    assert_eq!(model["last_seq"], 90);
    let replayed = support::metric(
        &server.metrics().await,
        "ffd_recovery_replayed_samples_total",
    );
    assert_eq!(replayed, Some(0.0), "nothing to replay after a clean stop");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_or_corrupt_newest_checkpoint_is_skipped() {
    for damage in ["truncate", "flip"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = first_life(dir.path()).await;
        let newest = &files[0];
        let bytes = fs::read(newest).expect("read");
        match damage {
            "truncate" => fs::write(newest, &bytes[..bytes.len() / 2]).expect("write"),
            _ => {
                let mut b = bytes.clone();
                let at = b.len() - 10;
                b[at] ^= 0x40;
                fs::write(newest, b).expect("write");
            }
        }
        let (server, model) = restart(dir.path()).await;
        // The checkpoint at 50 was loaded, and the WAL replayed 51..=80 on top of it.
        assert_eq!(model["samples_learned"], 80, "{damage}: {model}");
        let replayed = support::metric(
            &server.metrics().await,
            "ffd_recovery_replayed_samples_total",
        );
        assert_eq!(replayed, Some(30.0), "{damage}");
        server.shutdown().await.expect("clean shutdown");
    }
}

/// The only WAL segment of a first life whose checkpoints are then deleted, so the restart
/// replays the whole log.
async fn wal_only(dir: &Path) -> PathBuf {
    first_life(dir).await;
    for (_, path) in checkpoint::list(dir).expect("list") {
        fs::remove_file(path).expect("remove");
    }
    let segments = wal::list_segments(dir).expect("list");
    assert_eq!(segments.len(), 1, "one life, one segment");
    segments[0].path.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_wal_tail_is_discarded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let segment = wal_only(dir.path()).await;
    // Half of a record, as a crash in the middle of a write leaves it.
    let mut record = Vec::new();
    wal::encode(&mut record, 81, 3, &[0.5; 784]);
    let mut f = OpenOptions::new()
        .append(true)
        .open(&segment)
        .expect("open");
    f.write_all(&record[..record.len() / 2]).expect("write");
    drop(f);
    let (server, model) = restart(dir.path()).await;
    assert_eq!(model["samples_learned"], 80, "{model}");
    assert_eq!(
        model["last_seq"], 80,
        "the torn record's number is free again"
    );
    learn(&server, 80..81).await;
    assert_eq!(server.wait_learned(81).await["learned_seq"], 81);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_wal_record_ends_the_log_there() {
    let dir = tempfile::tempdir().expect("temp dir");
    let segment = wal_only(dir.path()).await;
    // Flip a feature byte of record 61 (records are equal-sized: 784 features each).
    let mut bytes = fs::read(&segment).expect("read");
    let at = wal::MAGIC.len() + 60 * wal::encoded_len(784) + 100;
    bytes[at] ^= 0x01;
    fs::write(&segment, bytes).expect("write");
    let (server, model) = restart(dir.path()).await;
    assert_eq!(model["samples_learned"], 60, "{model}");
    assert_eq!(model["learned_seq"], 60);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_network_is_refused_unless_reset() {
    let dir = tempfile::tempdir().expect("temp dir");
    first_life(dir.path()).await;
    let mut other = durable_config(dir.path());
    other.network.hidden = vec![64];
    let err = Service::new(other.clone()).expect_err("refused");
    assert!(matches!(err, ServiceError::Recovery(_)), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("different network") && message.contains("--reset"),
        "{message}"
    );
    // Nothing was touched: the original configuration still resumes.
    assert_eq!(checkpoint::list(dir.path()).expect("list").len(), 2);

    other.durability.reset = true;
    let server = start_server(other).await;
    let model = server.model().await;
    assert_eq!(model["samples_learned"], 0);
    assert_eq!(model["layer_sizes"], serde_json::json!([794, 64]));
    let aside: Vec<_> = fs::read_dir(dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("discarded-"))
        .collect();
    assert_eq!(aside.len(), 1, "the old state is kept aside");
    assert_eq!(
        checkpoint::list(&aside[0].path()).expect("list").len(),
        2,
        "both old checkpoints moved"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_and_none_modes_log_every_sample() {
    for mode in [DurabilityMode::Batch, DurabilityMode::None] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = durable_config(dir.path());
        config.durability.mode = mode;
        let server = start_server(config).await;
        learn(&server, 0..30).await;
        server.wait_learned(30).await;
        server.shutdown().await.expect("clean shutdown");
        // Without checkpoints, only the WAL can bring the 30 samples back.
        for (_, path) in checkpoint::list(dir.path()).expect("list") {
            fs::remove_file(path).expect("remove");
        }
        let (server, model) = restart(dir.path()).await;
        assert_eq!(model["samples_learned"], 30, "{mode:?}: {model}");
        server.shutdown().await.expect("clean shutdown");
    }
}
