//! The learn queue is bounded: with the learner paused (`POST /admin/pause`, the test hook) and
//! the queue holding 6 of its 8 samples, a batch of 3 gets 429 with `Retry-After` and none of it
//! is queued; once the learner resumes and drains, the same batch is accepted.
use crate::support;

use crate::support::{batch_json, error_code, metric, small_config, start_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_429_with_retry_after_and_queues_nothing() {
    let data = support::mnist_small();
    let mut config = small_config();
    config.learner.queue_capacity = 8;
    config.http.max_batch_samples = 8;
    config.http.retry_after_seconds = 3;
    let s = start_server(config).await;

    let r = s.post("/admin/pause", &serde_json::json!({})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.model().await["paused"], true);
    let r = s.post("/learn", &batch_json(&data.train, 0..6)).await;
    assert_eq!(r.status(), 202);
    let model = s.model().await;
    assert_eq!(
        (
            model["queue_depth"].as_u64(),
            model["samples_learned"].as_u64()
        ),
        (Some(6), Some(0))
    );

    let r = s.post("/learn", &batch_json(&data.train, 6..9)).await;
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(retry_after.as_deref(), Some("3"));
    let (status, code, message) = error_code(r).await;
    assert_eq!((status, code.as_str()), (429, "queue_full"), "{message}");

    // The refused batch left no trace in the queue or the sequence numbers.
    let model = s.model().await;
    assert_eq!(model["queue_depth"], 6);
    assert_eq!(model["last_seq"], 6);
    let scrape = s.metrics().await;
    assert_eq!(metric(&scrape, "ffd_learn_queue_depth"), Some(6.0));
    assert_eq!(
        metric(&scrape, "ffd_rejected_samples_total{reason=\"queue_full\"}"),
        Some(3.0)
    );

    let r = s.post("/admin/resume", &serde_json::json!({})).await;
    assert_eq!(r.status(), 200);
    s.wait_learned(6).await;
    let r = s.post("/learn", &batch_json(&data.train, 6..9)).await;
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(body["last_seq"], 9);
    s.wait_learned(9).await;
    s.shutdown().await.expect("clean shutdown");
}
