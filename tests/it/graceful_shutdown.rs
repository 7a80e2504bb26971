//! Graceful shutdown: when the trigger fires, an open NDJSON stream is answered 503 (saying how
//! many of its lines were accepted), the server stops, and the learner learns everything queued
//! — even while paused — before `serve` returns `Ok`. Past `learner.drain_timeout_ms` what is
//! still queued is dropped, and `serve` still returns `Ok`.
use crate::support;

use crate::support::{batch_json, sample_json, small_config, start_server};
use futures_util::stream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_open_streams_503_and_drains_the_queue() {
    let data = support::mnist_small();
    let mut s = start_server(small_config()).await;
    let status = std::sync::Arc::clone(&s.status);

    assert_eq!(
        s.post("/admin/pause", &serde_json::json!({}))
            .await
            .status(),
        200
    );
    for start in (0..300).step_by(100) {
        let r = s
            .post("/learn", &batch_json(&data.train, start..start + 100))
            .await;
        assert_eq!(r.status(), 202);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(8);
    let body = reqwest::Body::wrap_stream(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let request = tokio::spawn(
        s.client
            .post(format!("{}/learn", s.url))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send(),
    );
    for i in 300..305 {
        let (x, y) = data.train.sample(i);
        let mut line = serde_json::to_vec(&sample_json(x, y)).expect("JSON");
        line.push(b'\n');
        tx.send(Ok(line)).await.expect("request alive");
    }
    let model = s
        .wait_for("the stream's lines queued", |m| m["last_seq"] == 305)
        .await;
    assert_eq!(model["samples_learned"], 0, "the learner is paused");

    s.trigger_shutdown();
    let r = request.await.expect("no panic").expect("an answer");
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "shutting_down");
    assert_eq!(body["error"]["accepted"], 5);
    drop(tx);

    s.join().await.expect("serve returns Ok");
    assert_eq!(
        status.samples_learned(),
        305,
        "everything queued was learned"
    );
    assert_eq!(status.learned_seq(), 305);
    assert!(!status.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_drain_deadline_queued_samples_are_dropped() {
    let data = support::mnist_small();
    let mut config = small_config();
    config.learner.drain_timeout_ms = 0;
    let s = start_server(config).await;
    let status = std::sync::Arc::clone(&s.status);
    assert_eq!(
        s.post("/admin/pause", &serde_json::json!({}))
            .await
            .status(),
        200
    );
    let r = s.post("/learn", &batch_json(&data.train, 0..200)).await;
    assert_eq!(r.status(), 202);
    s.shutdown().await.expect("serve returns Ok");
    assert_eq!(status.samples_learned(), 0);
    assert!(!status.is_running());
}
