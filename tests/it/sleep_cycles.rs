//! Sleep phases happen on schedule: every `train.sleep_every_samples` wake samples, after
//! `sleep_every_seconds` with wake samples pending, and on `POST /admin/sleep`. Each sleep
//! learns as many negatives as wake samples since the last one (`negatives_per_sleep = 0`).
//! The interleaved schedule never sleeps on its own.
use crate::support;

use crate::support::{batch_json, metric, small_config, start_server};
use ffd::ff::ScheduleMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeps_every_n_samples_and_on_request() {
    let data = support::mnist_small();
    let mut config = small_config();
    config.train.sleep_every_samples = 8;
    config.train.sleep_every_seconds = 0.0;
    config.train.sleep_ramp = 0.0;
    let s = start_server(config).await;

    let r = s.post("/learn", &batch_json(&data.train, 0..40)).await;
    assert_eq!(r.status(), 202);
    let model = s.wait_learned(40).await;
    assert_eq!(model["sleep_cycles"], 5);
    assert_eq!(model["phase"], "wake");
    assert_eq!(model["schedule"], "sleep");
    let scrape = s.metrics().await;
    assert_eq!(metric(&scrape, "ffd_sleep_cycles_total"), Some(5.0));
    assert_eq!(
        metric(&scrape, "ffd_sleep_duration_seconds_count"),
        Some(5.0)
    );
    assert_eq!(
        metric(&scrape, "ffd_samples_learned_total{phase=\"sleep\"}"),
        Some(40.0)
    );

    let r = s.post("/admin/sleep", &serde_json::json!({})).await;
    assert_eq!(r.status(), 202);
    s.wait_for("the requested sleep", |m| m["sleep_cycles"] == 6)
        .await;
    let scrape = s.metrics().await;
    assert_eq!(metric(&scrape, "ffd_sleep_cycles_total"), Some(6.0));
    // No wake sample since the last sleep: nothing to replay.
    assert_eq!(
        metric(&scrape, "ffd_samples_learned_total{phase=\"sleep\"}"),
        Some(40.0)
    );
    s.shutdown().await.expect("clean shutdown");
}

/// The default ramp (`sleep_ramp = 0.05`): a wake lasts at most a twentieth of the samples
/// learned so far, at least one. A young stream sleeps after every sample (39 sleeps in its
/// first 40 samples: the 40th wake is 2 samples long) and its wakes lengthen from there (400
/// samples: 89 sleeps, the last 19 samples long, and a wake of 2 under way); every wake sample
/// is replayed once, at the sleep that ends its wake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_young_stream_sleeps_often_and_its_wakes_lengthen() {
    let data = support::mnist_small();
    let mut config = small_config();
    config.train.sleep_every_seconds = 0.0;
    assert_eq!(config.train.sleep_ramp, 0.05, "the service's default");
    let s = start_server(config).await;

    // (samples sent so far, sleeps, samples replayed): a sleep after each of the first 40
    // samples but the first; by 400 the wakes are longer and the last two samples wait in
    // the wake.
    for (range, cycles, replayed) in [(0..40, 39, 39.0), (40..400, 89, 398.0)] {
        let end = range.end as u64;
        let r = s.post("/learn", &batch_json(&data.train, range)).await;
        assert_eq!(r.status(), 202);
        let model = s.wait_learned(end).await;
        assert_eq!(model["sleep_cycles"], cycles, "after {end} samples");
        let scrape = s.metrics().await;
        assert_eq!(
            metric(&scrape, "ffd_samples_learned_total{phase=\"sleep\"}"),
            Some(replayed),
            "after {end} samples"
        );
    }
    s.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeps_after_sleep_every_seconds_with_pending_wake_samples() {
    let data = support::mnist_small();
    let mut config = small_config();
    config.train.sleep_every_samples = 1_000;
    config.train.sleep_ramp = 0.0;
    config.train.sleep_every_seconds = 0.2;
    let s = start_server(config).await;

    let r = s.post("/learn", &batch_json(&data.train, 0..3)).await;
    assert_eq!(r.status(), 202);
    s.wait_for("a sleep by the clock", |m| m["sleep_cycles"] == 1)
        .await;
    let scrape = s.metrics().await;
    assert_eq!(
        metric(&scrape, "ffd_samples_learned_total{phase=\"sleep\"}"),
        Some(3.0)
    );
    s.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_schedule_does_not_sleep() {
    let data = support::mnist_small();
    let mut config = small_config();
    config.train.schedule = ScheduleMode::Interleaved;
    config.train.sleep_every_samples = 8;
    config.train.sleep_every_seconds = 0.001;
    let s = start_server(config).await;

    // Several requests, each learned before the next: well past both triggers.
    for start in (0..40).step_by(10) {
        let r = s
            .post("/learn", &batch_json(&data.train, start..start + 10))
            .await;
        assert_eq!(r.status(), 202);
        s.wait_learned(start as u64 + 10).await;
    }
    let model = s.model().await;
    assert_eq!(model["sleep_cycles"], 0);
    assert_eq!(model["schedule"], "interleaved");
    s.shutdown().await.expect("clean shutdown");
}
