//! Drift is noticed: a service learning the committed MNIST subset raises no drift alarm while
//! the stream is stationary, and when the labels are suddenly permuted (every digit `d` now
//! labelled `d + 1 mod 10`) it detects the change within a few hundred samples, counts it in
//! `ffd_drift_detected_total`, and shows it in `/v1/model`. The alarm restarts the learning
//! rate with the drift's own boost (`[drift] drift_lr_boost`), which checkpoints keep.
use crate::support;

use std::path::Path;

use crate::support::{durable_config, metric, small_config, start_server, TestServer};
use ffd::ff::Boost;
use ffd::store::checkpoint;
use serde_json::json;

const TRAIN: usize = 3_000;

/// `/learn`'s body for samples `start..start + 100` of `train` (cycling), every label `k` sent
/// as `(k + shift) mod 10`: `shift = 0` is the stationary stream, any other a permutation.
fn batch(train: &ffd::data::idx::Dataset, start: usize, shift: usize) -> serde_json::Value {
    let samples: Vec<_> = (start..start + 100)
        .map(|i| {
            let (x, y) = train.sample(i % TRAIN);
            json!({ "features": x, "label": (y + shift) % 10 })
        })
        .collect();
    json!({ "samples": samples })
}

const PERMUTED: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_permutation_is_detected_and_reported() {
    let data = support::mnist_small();
    let mut config = small_config();
    config.network.hidden = vec![200, 200];
    config.train.sleep_every_seconds = 0.0;
    let server = start_server(config).await;
    let send = |start: usize, shift: usize| batch(&data.train, start, shift);
    for start in (0..TRAIN).step_by(100) {
        assert_eq!(server.post("/learn", &send(start, 0)).await.status(), 202);
    }
    let model = server.wait_learned(TRAIN as u64).await;
    assert_eq!(
        model["drift"]["detected"], 0,
        "no alarm on the stationary stream"
    );
    assert_eq!(model["drift"]["last"], serde_json::Value::Null);

    // The subset again, with every label shifted by one: the learned model is now wrong on
    // almost every sample.
    for start in (0..PERMUTED).step_by(100) {
        assert_eq!(server.post("/learn", &send(start, 1)).await.status(), 202);
    }
    let model = server.wait_learned((TRAIN + PERMUTED) as u64).await;
    let detected = model["drift"]["detected"].as_u64().expect("a count");
    assert!(detected >= 1, "the permutation is detected: {model}");
    let seq = model["drift"]["last"]["seq"]
        .as_u64()
        .expect("a sequence number");
    assert!(seq > TRAIN as u64, "detected at {seq}, after the change");
    let scrape = server.metrics().await;
    assert_eq!(
        metric(&scrape, "ffd_drift_detected_total"),
        Some(detected as f64)
    );
    server.shutdown().await.expect("clean shutdown");
}

/// The first alarm comes within 300 samples of the change (about 100 expected: the model errs
/// on nearly every permuted sample, against a running error rate near 0.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_is_quick() {
    let data = support::mnist_small();
    let mut config = small_config();
    config.network.hidden = vec![200, 200];
    config.train.sleep_every_seconds = 0.0;
    let server = start_server(config).await;
    for start in (0..TRAIN + 300).step_by(100) {
        let shift = usize::from(start >= TRAIN);
        let samples: Vec<_> = (start..start + 100)
            .map(|i| {
                let (x, y) = data.train.sample(i % TRAIN);
                json!({ "features": x, "label": (y + shift) % 10 })
            })
            .collect();
        let r = server.post("/learn", &json!({ "samples": samples })).await;
        assert_eq!(r.status(), 202);
    }
    let model = server.wait_learned((TRAIN + 300) as u64).await;
    let first = &model["drift"]["last"];
    assert!(
        model["drift"]["detected"].as_u64() >= Some(1),
        "no detection within 300 samples: {model}"
    );
    let seq = first["seq"].as_u64().expect("a sequence number");
    assert!(
        seq > TRAIN as u64 && seq <= (TRAIN + 300) as u64,
        "detected at {seq}"
    );
    server.shutdown().await.expect("clean shutdown");
}

/// `/admin/checkpoint`, read back: the trainer's boost and where it restarted.
async fn checkpointed_boost(
    server: &TestServer,
    config: &ffd::service::Config,
) -> (Option<Boost>, u64) {
    let r = server.post("/admin/checkpoint", &json!({})).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("JSON");
    let file = body["file"].as_str().expect("a path");
    let saved = checkpoint::read(Path::new(file), &config.network).expect("a valid checkpoint");
    (saved.trainer.boost, saved.trainer.boost_from)
}

/// Before the change the rate follows the start's boost (here off, `lr_boost = 1`); the alarm
/// restarts it at `drift_lr_boost` times `lr`, fading over `drift_lr_boost_samples`, from the
/// sample that raised it; a checkpoint (so a restarted learner) keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_restarts_the_rate_with_the_drift_boost() {
    let data = support::mnist_small();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = durable_config(dir.path());
    config.network.hidden = vec![200, 200];
    config.train.sleep_every_seconds = 0.0;
    config.drift.drift_lr_boost = 4.0;
    config.drift.drift_lr_boost_samples = 700;
    let server = start_server(config.clone()).await;
    let send = |start: usize, shift: usize| batch(&data.train, start, shift);
    for start in (0..TRAIN).step_by(100) {
        assert_eq!(server.post("/learn", &send(start, 0)).await.status(), 202);
    }
    let model = server.wait_learned(TRAIN as u64).await;
    assert_eq!(model["drift"]["detected"], 0, "no alarm yet");
    assert_eq!(
        checkpointed_boost(&server, &config).await,
        (None, 0),
        "the start's boost, from the start"
    );
    for start in (0..PERMUTED).step_by(100) {
        assert_eq!(server.post("/learn", &send(start, 1)).await.status(), 202);
    }
    let model = server.wait_learned((TRAIN + PERMUTED) as u64).await;
    assert!(
        model["drift"]["detected"].as_u64() >= Some(1),
        "detected: {model}"
    );
    let (boost, from) = checkpointed_boost(&server, &config).await;
    assert_eq!(
        boost,
        Some(Boost {
            factor: 4.0,
            samples: 700
        }),
        "the drift's boost"
    );
    assert!(
        from > TRAIN as u64 && from <= (TRAIN + PERMUTED) as u64,
        "restarted after {from} samples, at the alarm"
    );
    server.shutdown().await.expect("clean shutdown");
}
