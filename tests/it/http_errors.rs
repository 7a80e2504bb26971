//! Every client error has its status and `{"error": {"code", "message"}}` body: 400 malformed
//! JSON or wrong shape, 413 too large, 415 wrong content type, 422 a bad sample (the message
//! names its index and field) or an empty batch, 409 a delayed label for an id the service does
//! not hold, 404/405 for unknown routes. A rejected request is rejected
//! whole: nothing of it is queued or learned, and it gets no sequence number.
//! (429 is in `backpressure.rs`, 503 in `graceful_shutdown.rs`.)

use crate::support::{error_code, metric, sample_json, small_config, start_server};
use futures_util::stream;
use serde_json::json;

const D: usize = 784;

fn features() -> Vec<f32> {
    vec![0.5; D]
}

/// Checks the status and error code; returns the message.
async fn expect(response: reqwest::Response, status: u16, code: &str) -> String {
    let (got_status, got_code, message) = error_code(response).await;
    assert_eq!(
        (got_status, got_code.as_str()),
        (status, code),
        "message: {message}"
    );
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_its_status_and_learns_nothing() {
    let mut config = small_config();
    config.http.max_body_bytes = 100_000;
    config.http.max_batch_samples = 8;
    let s = start_server(config).await;

    // One good sample, so the counters below have a non-zero baseline.
    let r = s.post("/learn", &sample_json(&features(), 1)).await;
    assert_eq!(r.status(), 202);
    let baseline = s.wait_learned(1).await;
    assert_eq!(baseline["last_seq"], 1);

    // 400: not JSON, or JSON of the wrong shape.
    let r = s
        .post_raw(
            "/learn",
            "application/json",
            b"{\"features\": [1, 2".to_vec(),
        )
        .await;
    expect(r, 400, "malformed_json").await;
    let wrong_shapes = [
        json!({ "features": features() }),
        json!({ "features": features(), "label": "three" }),
        json!({ "features": features(), "label": 1.5 }),
        json!({ "features": features(), "label": 1, "colour": "red" }),
        json!({ "features": features(), "id": "x", "label": 1 }),
        json!({ "label": 1 }),
        json!({ "samples": [sample_json(&features(), 1)], "label": 1 }),
        json!({ "samples": [{ "features": features() }] }),
        json!({ "features": "all of them", "label": 1 }),
        json!([1, 2, 3]),
    ];
    for body in &wrong_shapes {
        let r = s.post("/learn", body).await;
        let (status, code, message) = error_code(r).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_shape"),
            "{body:.80}: {message}"
        );
    }
    let r = s
        .post("/classify", &json!({ "features": features(), "label": 1 }))
        .await;
    expect(r, 400, "invalid_shape").await;

    // 413: a body over http.max_body_bytes, declared or streamed; a batch over
    // http.max_batch_samples.
    let big: Vec<_> = (0..40).map(|_| sample_json(&features(), 1)).collect();
    let big = serde_json::to_vec(&json!({ "samples": big })).expect("JSON");
    assert!(big.len() > 100_000);
    let r = s.post_raw("/learn", "application/json", big.clone()).await;
    expect(r, 413, "payload_too_large").await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(10_000).map(|c| Ok(c.to_vec())).collect();
    let sent = s
        .client
        .post(format!("{}/learn", s.url))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream::iter(chunks)))
        .send()
        .await;
    // The server answers 413 as soon as the limit is passed and closes the connection without
    // reading the rest; over TCP a client still sending can then see the reset before the
    // answer. Either way the upload is refused (and the end of this test checks nothing was
    // learned); what must never happen is a success or another status.
    match sent {
        Ok(r) => {
            expect(r, 413, "payload_too_large").await;
        }
        Err(e) => assert!(
            !e.is_timeout() && (e.is_request() || e.is_body()),
            "a streamed oversized body ends in 413 or a closed connection, not {e:?}"
        ),
    }
    let nine: Vec<_> = (0..9).map(|_| sample_json(&[0.0; D], 1)).collect();
    let r = s.post("/learn", &json!({ "samples": nine })).await;
    let message = expect(r, 413, "payload_too_large").await;
    assert!(message.contains("at most 8"), "{message}");

    // 415: anything but JSON (and NDJSON on /learn).
    let body = serde_json::to_vec(&sample_json(&features(), 1)).expect("JSON");
    let r = s.post_raw("/learn", "text/plain", body.clone()).await;
    expect(r, 415, "unsupported_media_type").await;
    let r = s
        .client
        .post(format!("{}/learn", s.url))
        .body(body.clone())
        .send()
        .await
        .expect("answer");
    expect(r, 415, "unsupported_media_type").await;
    let r = s.post_raw("/classify", "application/x-ndjson", body).await;
    expect(r, 415, "unsupported_media_type").await;

    // 422: the message names the sample and the field; the whole request is refused.
    let mut short = features();
    short.pop();
    let batch = json!({ "samples": [
        sample_json(&features(), 0), sample_json(&features(), 1), sample_json(&short, 2),
    ]});
    let r = s.post("/learn", &batch).await;
    let message = expect(r, 422, "invalid_features").await;
    assert!(
        message.contains("sample 2") && message.contains("features"),
        "{message}"
    );
    assert!(
        message.contains("783") && message.contains("784"),
        "{message}"
    );

    // 1e39 is valid JSON but overflows f32 to infinity.
    let mut huge = serde_json::to_string(&sample_json(&features(), 3)).expect("JSON");
    huge = huge.replacen("0.5", "1e39", 1);
    let batch = format!("{{\"samples\": [{}, {huge}]}}", sample_json(&features(), 3));
    let r = s
        .post_raw("/learn", "application/json", batch.into_bytes())
        .await;
    let message = expect(r, 422, "non_finite_feature").await;
    assert!(
        message.contains("sample 1: `features[0]` is not finite"),
        "{message}"
    );

    for label in [10, -1] {
        let r = s
            .post("/learn", &json!({ "features": features(), "label": label }))
            .await;
        let message = expect(r, 422, "invalid_label").await;
        assert!(
            message.contains("sample 0") && message.contains("label"),
            "{message}"
        );
    }
    let r = s
        .post("/learn", &json!({ "id": "never-classified", "label": 1 }))
        .await;
    let message = expect(r, 409, "unknown_id").await;
    assert!(message.contains("never-classified"), "{message}");
    // An empty batch has nothing to learn or classify.
    for path in ["/learn", "/classify"] {
        let message = expect(
            s.post(path, &json!({ "samples": [] })).await,
            422,
            "empty_batch",
        )
        .await;
        assert!(message.contains("`samples` is empty"), "{path}: {message}");
    }
    let r = s
        .post(
            "/classify",
            &json!({ "samples": [{ "features": features() }, { "features": short }] }),
        )
        .await;
    let message = expect(r, 422, "invalid_features").await;
    assert!(message.contains("sample 1"), "{message}");

    // Unknown routes and methods.
    let r = s
        .client
        .get(format!("{}/nope", s.url))
        .send()
        .await
        .expect("answer");
    expect(r, 404, "not_found").await;
    let r = s
        .client
        .get(format!("{}/learn", s.url))
        .send()
        .await
        .expect("answer");
    expect(r, 405, "method_not_allowed").await;

    // Nothing above was learned, queued or numbered.
    let model = s.model().await;
    assert_eq!(model["samples_learned"], 1);
    assert_eq!(model["last_seq"], 1);
    assert_eq!(model["queue_depth"], 0);
    let scrape = s.metrics().await;
    let m = |series: &str| metric(&scrape, series).unwrap_or_else(|| panic!("{series} missing"));
    assert_eq!(m("ffd_samples_learned_total{phase=\"wake\"}"), 1.0);
    assert_eq!(m("ffd_samples_accepted_total"), 1.0);
    assert_eq!(m("ffd_prequential_predictions_total"), 1.0);
    assert_eq!(m("ffd_rejected_samples_total{reason=\"features\"}"), 3.0);
    assert_eq!(m("ffd_rejected_samples_total{reason=\"non_finite\"}"), 2.0);
    assert_eq!(m("ffd_rejected_samples_total{reason=\"label\"}"), 2.0);
    assert_eq!(m("ffd_rejected_samples_total{reason=\"unknown_id\"}"), 1.0);
    assert_eq!(m("ffd_rejected_samples_total{reason=\"too_large\"}"), 9.0);
    assert_eq!(
        m("ffd_http_requests_total{route=\"/learn\",status=\"400\"}"),
        11.0
    );
    assert_eq!(
        m("ffd_http_requests_total{route=\"/learn\",status=\"422\"}"),
        5.0
    );
    assert_eq!(
        m("ffd_http_requests_total{route=\"/learn\",status=\"409\"}"),
        1.0
    );
    assert_eq!(
        m("ffd_http_requests_total{route=\"unmatched\",status=\"404\"}"),
        1.0
    );
    s.shutdown().await.expect("clean shutdown");
}
