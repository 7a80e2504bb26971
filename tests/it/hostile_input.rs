//! Hostile input: values the engine cannot use, oversized requests, slow and idle clients, a
//! flood of requests or of delayed-label ids. Each gets a clear JSON error (or is shed, or
//! closed) and changes nothing.
use crate::support;

use std::time::{Duration, Instant};

use crate::support::{error_code, metric, sample_json, small_config, start_server, TestServer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Nothing was queued or learned: no accepted sample, an empty queue.
async fn nothing_learned(s: &TestServer) {
    let scrape = s.metrics().await;
    assert_eq!(metric(&scrape, "ffd_samples_accepted_total"), Some(0.0));
    let model = s.model().await;
    assert_eq!(model["queue_depth"], 0, "{model}");
    assert_eq!(model["samples_learned"], 0, "{model}");
}

#[tokio::test]
async fn huge_and_non_finite_features_are_refused_whole() {
    let s = start_server(small_config()).await;
    let mut huge = vec![0.5; 784];
    huge[100] = 1e30;
    let r = s.post("/learn", &sample_json(&huge, 1)).await;
    let (status, code, message) = error_code(r).await;
    assert_eq!((status, code.as_str()), (422, "feature_out_of_range"));
    assert!(message.contains("`features[100]`"), "{message}");
    // In a batch, one bad sample refuses the whole batch.
    let batch = json!({ "samples": [sample_json(&[0.5; 784], 1), sample_json(&huge, 2)] });
    let (status, code, message) = error_code(s.post("/learn", &batch).await).await;
    assert_eq!((status, code.as_str()), (422, "feature_out_of_range"));
    assert!(message.contains("sample 1"), "{message}");
    // 1e39 overflows f32 while parsing: not finite.
    let body = format!("{{\"features\": [1e39{}], \"label\": 0}}", ",0".repeat(783));
    let r = s
        .post_raw("/learn", "application/json", body.into_bytes())
        .await;
    assert_eq!(error_code(r).await.1, "non_finite_feature");
    // NaN and Infinity are not JSON.
    for literal in ["NaN", "Infinity", "-Infinity"] {
        let body = format!(
            "{{\"features\": [{literal}{}], \"label\": 0}}",
            ",0".repeat(783)
        );
        let r = s
            .post_raw("/learn", "application/json", body.into_bytes())
            .await;
        assert_eq!(error_code(r).await.0, 400, "{literal}");
    }
    // /classify applies the same bound.
    let r = s.post("/classify", &json!({ "features": huge })).await;
    assert_eq!(error_code(r).await.1, "feature_out_of_range");
    nothing_learned(&s).await;
    let scrape = s.metrics().await;
    assert_eq!(
        metric(
            &scrape,
            "ffd_rejected_samples_total{reason=\"out_of_range\"}"
        ),
        Some(3.0),
        "the single sample and the whole batch of two"
    );
    assert_eq!(metric(&scrape, "ffd_learner_nonfinite_total"), Some(0.0));
    s.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn oversized_requests_get_413_and_learn_nothing() {
    let mut config = small_config();
    config.http.max_body_bytes = 64 << 10;
    config.http.max_batch_samples = 2;
    config.http.max_line_bytes = 8 << 10;
    let s = start_server(config).await;
    let body = vec![b' '; 100 << 10];
    let r = s.post_raw("/learn", "application/json", body).await;
    assert_eq!(error_code(r).await.1, "payload_too_large");
    let samples: Vec<_> = (0..3).map(|i| sample_json(&[0.0; 784], i)).collect();
    let r = s.post("/learn", &json!({ "samples": samples })).await;
    assert_eq!(error_code(r).await.0, 413);
    let line = format!("{}\n", " ".repeat(10 << 10));
    let r = s
        .post_raw("/learn", "application/x-ndjson", line.into_bytes())
        .await;
    assert_eq!(error_code(r).await.1, "payload_too_large");
    nothing_learned(&s).await;
    s.shutdown().await.expect("clean shutdown");
}

/// A request body that sends `first` and then holds the request open until `release` fires.
fn held_body(first: Vec<u8>, release: tokio::sync::oneshot::Receiver<()>) -> reqwest::Body {
    let stream = futures_util::stream::unfold(
        (Some(first), Some(release)),
        |(first, release)| async move {
            if let Some(first) = first {
                return Some((Ok::<_, std::io::Error>(first), (None, release)));
            }
            let _ = release?.await;
            None
        },
    );
    reqwest::Body::wrap_stream(stream)
}

#[tokio::test]
async fn beyond_the_request_limit_requests_are_shed_with_503() {
    let mut config = small_config();
    config.http.max_concurrent_requests = 1;
    let s = start_server(config).await;
    // An NDJSON stream that sends one line and stays open holds the only slot.
    let (release, held) = tokio::sync::oneshot::channel();
    let line = format!("{}\n", sample_json(&[0.5; 784], 3)).into_bytes();
    let stream = s
        .client
        .post(format!("{}/learn", s.url))
        .header("content-type", "application/x-ndjson")
        .body(held_body(line, held))
        .send();
    let stream = tokio::spawn(stream);
    let deadline = Instant::now() + support::WAIT;
    while metric(&s.metrics().await, "ffd_samples_accepted_total") != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the stream's first line never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let r = s
        .post("/classify", &json!({ "features": vec![0.0; 784] }))
        .await;
    let retry_after = r.headers().get("retry-after").cloned();
    let (status, code, _) = error_code(r).await;
    assert_eq!((status, code.as_str()), (503, "overloaded"));
    assert!(retry_after.is_some(), "503 without Retry-After");
    let r = s.post("/learn", &sample_json(&[0.5; 784], 1)).await;
    assert_eq!(error_code(r).await.1, "overloaded");
    // The v2 routes share the limit and refuse in the protocol's shape, `{"error": "..."}`.
    let infer = json!({"inputs": [{"name": "features", "shape": [1, 784], "datatype": "FP32",
        "data": vec![0.0; 784]}]});
    let r = s.post("/v2/models/ffd/infer", &infer).await;
    assert_eq!(r.status(), 503);
    assert!(
        r.headers().contains_key("retry-after"),
        "503 without Retry-After"
    );
    let body: serde_json::Value = r.json().await.expect("a JSON error");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("busy")),
        "not the v2 error shape: {body}"
    );
    // Probes and metrics are exempt.
    for path in ["/healthz", "/readyz", "/v2/health/ready"] {
        let r = s.client.get(format!("{}{path}", s.url)).send().await;
        assert_eq!(r.expect("answers").status(), 200, "{path}");
    }
    let scrape = s.metrics().await;
    assert_eq!(metric(&scrape, "ffd_http_shed_total"), Some(3.0));
    assert_eq!(
        metric(&scrape, "ffd_samples_accepted_total"),
        Some(1.0),
        "the shed /learn queued nothing"
    );

    let _ = release.send(());
    let r = stream
        .await
        .expect("joined")
        .expect("the stream is answered");
    assert_eq!(r.status(), 202);
    let r = s
        .post("/classify", &json!({ "features": vec![0.0; 784] }))
        .await;
    assert_eq!(r.status(), 200, "the slot is free again");
    s.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_stream_whose_line_never_finishes_gets_408() {
    let mut config = small_config();
    config.http.request_timeout_ms = 300;
    let s = start_server(config).await;
    let (_release, held) = tokio::sync::oneshot::channel::<()>();
    let mut body = format!("{}\n", sample_json(&[0.5; 784], 3)).into_bytes();
    body.extend_from_slice(b"{\"features\": [0.1, 0.2");
    let started = Instant::now();
    let r = s
        .client
        .post(format!("{}/learn", s.url))
        .header("content-type", "application/x-ndjson")
        .body(held_body(body, held))
        .send()
        .await
        .expect("answered");
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.expect("a JSON error body");
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["error"]["code"], "request_timeout");
    assert_eq!(body["error"]["accepted"], 1, "{body}");
    assert!(started.elapsed() < Duration::from_secs(10));
    s.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn idle_and_half_sent_connections_are_closed() {
    let mut config = small_config();
    config.http.idle_timeout_ms = 200;
    config.http.max_connections = 1;
    let s = start_server(config).await;
    let addr = s.url.trim_start_matches("http://").to_owned();
    // Headers that never finish hold the only connection slot until the idle timeout.
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the half-sent request was not closed: {read:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
    // The slot is free again: a normal request is answered.
    let r = s.client.get(format!("{}/healthz", s.url)).send().await;
    assert_eq!(r.expect("answers").status(), 200);
    s.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_flood_of_delayed_label_ids_stays_bounded() {
    let mut config = small_config();
    config.pending.capacity = 5;
    let s = start_server(config).await;
    for i in 0..50 {
        let body = json!({ "features": vec![0.25; 784], "id": format!("req-{i}") });
        assert_eq!(s.post("/classify", &body).await.status(), 200);
    }
    assert_eq!(s.model().await["pending_entries"], 5);
    let scrape = s.metrics().await;
    assert_eq!(metric(&scrape, "ffd_pending_entries"), Some(5.0));
    // The oldest were evicted; the newest are kept.
    let r = s
        .post("/learn", &json!({ "id": "req-0", "label": 1 }))
        .await;
    assert_eq!(error_code(r).await.1, "unknown_id");
    let r = s
        .post("/learn", &json!({ "id": "req-49", "label": 1 }))
        .await;
    assert_eq!(r.status(), 202);
    s.wait_learned(1).await;
    s.shutdown().await.expect("clean shutdown");
}

/// The engine's guard end to end: a learning rate the configuration accepts but that
/// overflows every update (1e37) gets each sample refused — counted, with the model unchanged —
/// and the service keeps serving finite answers.
#[tokio::test]
async fn updates_that_would_overflow_are_refused_and_the_model_keeps_serving() {
    let mut config = small_config();
    config.train.optimiser.lr = 1e37;
    config.average.average_decay = 0.0;
    // A schedule whose wake updates the weights, so each sample's own update is the one
    // refused (the service's default wake only stores samples; its sleep is guarded alike).
    config.train.sleep_method = ffd::ff::SleepMethod::Negatives;
    config.train.sleep_every_samples = 16;
    config.train.wake_lr_scale = 1.0;
    config.train.sleep_ramp = 0.0;
    let s = start_server(config).await;
    let features: Vec<f32> = (0..784).map(|i| (i % 7) as f32 / 7.0).collect();
    let classify = json!({ "features": features });
    let before: serde_json::Value = s
        .post("/classify", &classify)
        .await
        .json()
        .await
        .expect("JSON");
    let batch = json!({ "samples": (0..5).map(|i| sample_json(&features, i)).collect::<Vec<_>>() });
    let accepted: serde_json::Value = s.post("/learn", &batch).await.json().await.expect("JSON");
    let last_seq = accepted["last_seq"].as_u64().expect("last_seq");
    s.wait_for("the refused samples to be handled", |m| {
        m["learned_seq"].as_u64() == Some(last_seq)
    })
    .await;
    let scrape = s.metrics().await;
    assert_eq!(metric(&scrape, "ffd_learner_nonfinite_total"), Some(5.0));
    let model = s.model().await;
    assert_eq!(model["samples_learned"], 0, "{model}");

    let r = s.post("/classify", &classify).await;
    assert_eq!(r.status(), 200);
    let after: serde_json::Value = r.json().await.expect("JSON");
    let probabilities = after["probabilities"].as_array().expect("probabilities");
    assert!(
        probabilities
            .iter()
            .all(|p| p.as_f64().is_some_and(f64::is_finite)),
        "{after}"
    );
    assert_eq!(after["scores"], before["scores"], "the model is unchanged");
    s.shutdown().await.expect("clean shutdown");
}
