//! Property tests over request decoding through the real router on a live server: arbitrary
//! bytes and structured-but-wrong JSON sent to `/learn` (JSON and NDJSON), `/classify` and as
//! delayed labels never cause a panic or a 5xx — only 2xx or 4xx — and a 4xx queues nothing.

use crate::support::{metric, small_config, start_server, TestServer};
use proptest::prelude::*;
use serde_json::{json, Value};

/// A small network (4 inputs, 3 classes), so random vectors are sometimes valid too.
fn server(rt: &tokio::runtime::Runtime) -> TestServer {
    let mut config = small_config();
    config.network.inputs = 4;
    config.network.classes = 3;
    config.network.hidden = vec![8];
    config.network.score_from_layer = 0;
    config.http.max_body_bytes = 4096;
    config.http.max_line_bytes = 512;
    config.http.max_batch_samples = 4;
    rt.block_on(start_server(config))
}

/// Posts `body` and checks the answer: 2xx or 4xx with the JSON error shape, and nothing
/// queued on a 4xx.
fn check(rt: &tokio::runtime::Runtime, s: &TestServer, path: &str, kind: &str, body: Vec<u8>) {
    rt.block_on(async {
        let before = metric(&s.metrics().await, "ffd_samples_accepted_total");
        let r = s.post_raw(path, kind, body.clone()).await;
        let status = r.status().as_u16();
        let text = r.text().await.expect("a body");
        let shown = String::from_utf8_lossy(&body);
        assert!(
            (200..300).contains(&status) || (400..500).contains(&status),
            "{path} {kind}: status {status} for {shown:?}: {text}"
        );
        if status >= 400 {
            let error: Value = serde_json::from_str(&text).expect("a JSON error body");
            assert!(error["error"]["code"].is_string(), "{text}");
            // An NDJSON stream keeps the lines before a bad one; JSON requests queue nothing.
            if kind == "application/json" {
                let after = metric(&s.metrics().await, "ffd_samples_accepted_total");
                assert_eq!(
                    before, after,
                    "{path}: a {status} queued samples: {shown:?}"
                );
            }
        }
    });
}

/// JSON values shaped like requests: the right keys with wrong or right values, nested.
fn request_like() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-4i64..6).prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop::sample::select(vec![1e38f64, -1e38, 1e15, 3.5e38, 1e300, 0.5]).prop_map(Value::from),
        "[a-z0-9-]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::vec(
                (
                    prop::sample::select(vec!["features", "label", "samples", "id", "x"]),
                    inner,
                ),
                0..4
            )
            .prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_get_2xx_or_4xx(body in prop::collection::vec(any::<u8>(), 0..600)) {
        let rt = tokio::runtime::Runtime::new().expect("a runtime");
        let s = server(&rt);
        for (path, kind) in [
            ("/learn", "application/json"),
            ("/learn", "application/x-ndjson"),
            ("/classify", "application/json"),
            ("/learn", "text/plain"),
        ] {
            check(&rt, &s, path, kind, body.clone());
        }
        rt.block_on(s.shutdown()).expect("clean shutdown");
    }

    #[test]
    fn request_shaped_json_gets_2xx_or_4xx(value in request_like(), lines in prop::collection::vec(request_like(), 0..4)) {
        let rt = tokio::runtime::Runtime::new().expect("a runtime");
        let s = server(&rt);
        let body = serde_json::to_vec(&value).expect("serialises");
        check(&rt, &s, "/learn", "application/json", body.clone());
        check(&rt, &s, "/classify", "application/json", body);
        let stream: Vec<u8> = lines
            .iter()
            .flat_map(|l| {
                let mut line = serde_json::to_vec(l).expect("serialises");
                line.push(b'\n');
                line
            })
            .collect();
        check(&rt, &s, "/learn", "application/x-ndjson", stream);
        rt.block_on(s.shutdown()).expect("clean shutdown");
    }

    #[test]
    fn delayed_labels_and_samples_with_odd_values_get_2xx_or_4xx(
        id in prop::option::of("[ -~]{0,300}"),
        label in any::<i64>(),
        features in prop::collection::vec(any::<f32>().prop_filter("JSON numbers are finite", |f| f.is_finite()), 0..6),
    ) {
        let rt = tokio::runtime::Runtime::new().expect("a runtime");
        let s = server(&rt);
        let mut classify = json!({ "features": features });
        if let Some(id) = &id {
            classify["id"] = json!(id);
        }
        check(&rt, &s, "/classify", "application/json", serde_json::to_vec(&classify).expect("json"));
        let learn = match &id {
            Some(id) => json!({ "id": id, "label": label }),
            None => json!({ "features": features, "label": label }),
        };
        check(&rt, &s, "/learn", "application/json", serde_json::to_vec(&learn).expect("json"));
        rt.block_on(s.shutdown()).expect("clean shutdown");
    }
}
