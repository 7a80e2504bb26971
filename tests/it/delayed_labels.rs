//! Delayed labels: `/classify` with an `id` keeps the features; `/learn {"id", "label"}` later
//! learns them, once. A refused request gives its ids back. The map is bounded: past
//! `pending.capacity` the oldest id is evicted. (Expiry by `pending.ttl_seconds` is unit-tested
//! in `service::pending` with made-up instants.)
use crate::support;

use crate::support::{error_code, metric, small_config, start_server};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_with_id_then_learn_the_label() {
    let data = support::mnist_small();
    let x = |i: usize| data.train.sample(i).0.to_vec();
    let y = |i: usize| data.train.sample(i).1;
    let s = start_server(small_config()).await;

    let r = s
        .post("/classify", &json!({ "features": x(0), "id": "a" }))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.model().await["pending_entries"], 1);
    assert_eq!(metric(&s.metrics().await, "ffd_pending_entries"), Some(1.0));

    let r = s.post("/learn", &json!({ "id": "a", "label": y(0) })).await;
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(
        (body["accepted"].as_u64(), body["last_seq"].as_u64()),
        (Some(1), Some(1))
    );
    let model = s.wait_learned(1).await;
    assert_eq!(model["pending_entries"], 0);

    // An id is learned once.
    let r = s.post("/learn", &json!({ "id": "a", "label": y(0) })).await;
    let (status, code, message) = error_code(r).await;
    assert_eq!((status, code.as_str()), (409, "unknown_id"), "{message}");

    // A batch of ids; a refused request puts its ids back.
    let r = s
        .post(
            "/classify",
            &json!({ "samples": [
                { "features": x(1), "id": "b" }, { "features": x(2), "id": "c" },
            ]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let bad = json!({ "samples": [{ "id": "b", "label": y(1) }, { "id": "c", "label": 10 }] });
    let (status, code, message) = error_code(s.post("/learn", &bad).await).await;
    assert_eq!((status, code.as_str()), (422, "invalid_label"), "{message}");
    assert!(message.contains("sample 1"), "{message}");
    assert_eq!(s.model().await["pending_entries"], 2);
    let good = json!({ "samples": [
        { "id": "b", "label": y(1) },
        { "id": "c", "label": y(2) },
        { "features": x(3), "label": y(3) },
    ]});
    let r = s.post("/learn", &good).await;
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(
        (body["accepted"].as_u64(), body["last_seq"].as_u64()),
        (Some(3), Some(4))
    );
    let model = s.wait_learned(4).await;
    assert_eq!(model["pending_entries"], 0);

    // Ids must be 1 to 256 characters, however many bytes those take.
    let id = "é".repeat(256);
    let r = s
        .post("/classify", &json!({ "features": x(0), "id": id }))
        .await;
    assert_eq!(r.status(), 200, "256 two-byte characters are a valid id");
    for id in [String::new(), "x".repeat(257), "é".repeat(257)] {
        let r = s
            .post("/classify", &json!({ "features": x(0), "id": id }))
            .await;
        let (status, code, message) = error_code(r).await;
        assert_eq!((status, code.as_str()), (422, "invalid_id"), "{message}");
    }
    s.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pending_map_evicts_the_oldest_id() {
    let data = support::mnist_small();
    let mut config = small_config();
    config.pending.capacity = 2;
    let s = start_server(config).await;
    for id in ["x", "y", "z"] {
        let r = s
            .post(
                "/classify",
                &json!({ "features": data.train.sample(0).0, "id": id }),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(s.model().await["pending_entries"], 2);
    let (status, code, _) =
        error_code(s.post("/learn", &json!({ "id": "x", "label": 1 })).await).await;
    assert_eq!((status, code.as_str()), (409, "unknown_id"));
    for id in ["y", "z"] {
        let r = s.post("/learn", &json!({ "id": id, "label": 1 })).await;
        assert_eq!(r.status(), 202, "{id}");
    }
    s.wait_learned(2).await;
    s.shutdown().await.expect("clean shutdown");
}
