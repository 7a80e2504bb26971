//! Damaged files in the data directory, as an operator would meet them after a crash or a
//! disk fault: a truncated or corrupt newest checkpoint is moved aside for an older one (and
//! the WAL, kept back to the oldest kept checkpoint, fills the gap); with every checkpoint
//! damaged the retained WAL is replayed from its start; garbage in a WAL segment loses exactly
//! the records it covers (moved aside, numbers reported); a torn tail loses nothing
//! acknowledged and its numbers are not reused; a checkpoint written for another network
//! stops the start with a message naming `--reset`, which sets the state aside. Every case
//! checks what `/v1/model` reports after the restart.
use crate::support;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::support::{batch_json, durable_config, start_server, TestServer};
use ffd::service::config::DurabilityMode;
use ffd::service::{AccessTokens, Service, ServiceError};
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

/// Bytes of one WAL record of a 784-feature sample.
fn record_len() -> usize {
    wal::encoded_len(784)
}

/// Offset of record `seq` in a segment whose first record is seq 1.
fn record_at(seq: u64) -> usize {
    wal::SEGMENT_HEADER + (seq as usize - 1) * record_len()
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
        "the torn record was never counted by the segment header: its number is free again"
    );
    let recovery = &model["recovery"];
    assert_eq!(recovery["wal_records_lost"], 0, "{recovery}");
    let moved = recovery["damaged_files"][0].as_str().expect("moved aside");
    assert_eq!(
        fs::metadata(moved).expect("kept").len() as usize,
        record.len() / 2
    );
    learn(&server, 80..81).await;
    assert_eq!(server.wait_learned(81).await["learned_seq"], 81);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_never_lets_an_acknowledged_number_be_reused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let segment = wal_only(dir.path()).await;
    // Cut the second half of record 80, the last one written (and acknowledged).
    let len = fs::metadata(&segment).expect("stat").len();
    assert_eq!(len as usize, record_at(81));
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .and_then(|f| f.set_len(len - record_len() as u64 / 2))
        .expect("truncate");
    let (server, model) = restart(dir.path()).await;
    let recovery = &model["recovery"];
    assert_eq!(model["samples_learned"], 79, "{model}");
    assert_eq!(recovery["torn_seqs"], serde_json::json!([[80, 80]]));
    assert_eq!(recovery["torn_records"], 1);
    assert_eq!(recovery["wal_records_lost"], 0);
    assert_eq!(recovery["high_water_seq"], 80);
    let r = server
        .post("/learn", &batch_json(&support::mnist_small().train, 80..81))
        .await;
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(
        body["last_seq"], 81,
        "80 was used before the damage: {body}"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_a_segment_loses_only_the_records_it_covers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let segment = wal_only(dir.path()).await;
    // Garbage from inside record 31 to inside record 33: those three are damaged, the 77
    // others intact, before and after it.
    let mut bytes = fs::read(&segment).expect("read");
    let (from, to) = (record_at(31) + 100, record_at(33) + 200);
    for (i, b) in bytes[from..to].iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3];
    }
    fs::write(&segment, &bytes).expect("write");
    let (server, model) = restart(dir.path()).await;
    let recovery = &model["recovery"];
    assert_eq!(recovery["wal_records_lost"], 3, "{recovery}");
    assert_eq!(recovery["wal_lost_seqs"], serde_json::json!([[31, 33]]));
    assert_eq!(model["samples_learned"], 77, "{model}");
    assert_eq!(model["learned_seq"], 80);
    assert_eq!(model["last_seq"], 80);
    // The damaged records' bytes are kept beside the segment, and nothing else was cut.
    let moved = recovery["damaged_files"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|f| fs::read(f.as_str().expect("a path")).expect("kept"))
        .collect::<Vec<_>>();
    assert_eq!(moved, [bytes[record_at(31)..record_at(34)].to_vec()]);
    assert_eq!(
        support::metric(&server.metrics().await, "ffd_wal_records_lost_total"),
        Some(3.0)
    );
    learn(&server, 80..81).await;
    assert_eq!(server.wait_learned(78).await["learned_seq"], 81);
    server.shutdown().await.expect("clean shutdown");

    // The segment was repaired: the next start finds nothing more to cut.
    let (server, model) = restart(dir.path()).await;
    assert_eq!(model["recovery"]["wal_records_lost"], 0, "{model}");
    assert_eq!(model["recovery"]["damaged_files"], serde_json::json!([]));
    server.shutdown().await.expect("clean shutdown");
}

/// A life with small WAL segments and four checkpoints (40, 80, 120 by request, 150 at
/// shutdown), three kept. Returns the kept checkpoint files, newest first.
async fn life_with_checkpoints(dir: &Path) -> Vec<PathBuf> {
    let mut config = durable_config(dir);
    config.durability.wal_segment_bytes = 20 * record_len() as u64;
    let server = start_server(config).await;
    for (range, seq) in [(0..40, 40), (40..80, 80), (80..120, 120)] {
        learn(&server, range).await;
        server.wait_learned(seq).await;
        let r = server
            .client
            .post(format!("{}/admin/checkpoint", server.url))
            .send()
            .await
            .expect("answers");
        assert_eq!(r.status(), 200);
    }
    learn(&server, 120..150).await;
    server.wait_learned(150).await;
    server.shutdown().await.expect("clean shutdown");
    let kept: Vec<(u64, PathBuf)> = checkpoint::list(dir).expect("list");
    assert_eq!(
        kept.iter().map(|c| c.0).collect::<Vec<_>>(),
        [150, 120, 80],
        "keep_checkpoints = 3"
    );
    kept.into_iter().map(|c| c.1).collect()
}

fn truncate_file(path: &Path) {
    let bytes = fs::read(path).expect("read");
    fs::write(path, &bytes[..bytes.len() / 2]).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kept_checkpoint_is_a_recovery_point() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kept = life_with_checkpoints(dir.path()).await;
    // The newest two damaged: the oldest kept one (80) is loaded, and the WAL, kept back to
    // it, replays 81..=150 with no gap.
    truncate_file(&kept[0]);
    truncate_file(&kept[1]);
    let (server, model) = restart(dir.path()).await;
    let recovery = &model["recovery"];
    assert_eq!(recovery["checkpoint_seq"], 80, "{recovery}");
    assert_eq!(recovery["replayed"], 70);
    assert_eq!(recovery["from_wal_start"], false);
    assert_eq!(recovery["unretained_seqs"], serde_json::Value::Null);
    let aside = recovery["checkpoints_damaged"].as_array().expect("a list");
    assert_eq!(aside.len(), 2);
    for file in aside {
        assert!(Path::new(file.as_str().expect("a path")).exists(), "{file}");
    }
    assert_eq!(model["samples_learned"], 150, "{model}");
    assert_eq!(model["learned_seq"], 150);
    assert_eq!(model["last_seq"], 150);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_checkpoint_damaged_the_retained_wal_is_replayed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kept = life_with_checkpoints(dir.path()).await;
    for file in &kept {
        truncate_file(file);
    }
    let first_retained = wal::list_segments(dir.path()).expect("list")[0].start_seq;
    assert!(
        (2..=81).contains(&first_retained),
        "kept back to the oldest checkpoint (80), older ones pruned: {first_retained}"
    );
    let (server, model) = restart(dir.path()).await;
    let recovery = &model["recovery"];
    assert_eq!(recovery["from_wal_start"], true, "{recovery}");
    assert_eq!(recovery["checkpoint"], serde_json::Value::Null);
    assert_eq!(
        recovery["checkpoints_damaged"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(
        recovery["unretained_seqs"],
        serde_json::json!([1, first_retained - 1])
    );
    // Every number is accounted for: learned from the WAL, or only in damaged checkpoints.
    assert_eq!(
        model["samples_learned"],
        150 - (first_retained - 1),
        "{model}"
    );
    assert_eq!(model["learned_seq"], 150);
    assert_eq!(model["last_seq"], 150);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_network_is_refused_unless_reset() {
    let dir = tempfile::tempdir().expect("temp dir");
    first_life(dir.path()).await;
    let mut other = durable_config(dir.path());
    other.network.hidden = vec![64];
    let err = Service::start(other.clone(), AccessTokens::default()).expect_err("refused");
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
