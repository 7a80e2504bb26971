//! `/openapi.json` is exact: every answer of every route, successes and refusals alike, has a
//! documented status and content type and validates against the documented schema; the
//! request examples it gives (built with the configured sizes) validate against their schemas
//! and are taken; and for request bodies at the edges of every rule (feature count, feature
//! range, label range, id length, batch limits, one shape out of several, v2 tensor shapes),
//! the document says "valid" exactly when the server takes the body.
use crate::support;

use std::collections::BTreeMap;

use ffd::service::AccessTokens;
use serde_json::{json, Value};

use crate::support::start_server_with;

const LEARN: &str = "learn-secret";
const READ: &str = "read-secret";

/// A configuration small enough that the edge cases are quick: 6 features, 4 classes, batches
/// of at most 3; durability on, so `/admin/checkpoint` answers 200.
fn config(dir: &std::path::Path) -> ffd::service::Config {
    let mut c = support::durable_config(dir);
    c.network.inputs = 6;
    c.network.classes = 4;
    c.network.hidden = vec![8];
    c.http.max_batch_samples = 3;
    c
}

/// The document and validators for its schemas.
struct Document(Value);

impl Document {
    /// A validator for `schema`, a schema of the document (it may refer to its components).
    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let mut root = schema.clone();
        let object = root.as_object_mut().expect("a schema object");
        object.insert("components".into(), self.0["components"].clone());
        jsonschema::draft202012::new(&root)
            .unwrap_or_else(|e| panic!("an invalid schema {schema}: {e}"))
    }

    /// Errors of `instance` against `schema`, empty when it is valid.
    fn errors(&self, schema: &Value, instance: &Value) -> Vec<String> {
        self.validator(schema)
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect()
    }

    fn operation(&self, path: &str, method: &str) -> &Value {
        let op = &self.0["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        op
    }

    /// The JSON request schema of `POST path`.
    fn request_schema(&self, path: &str) -> &Value {
        &self.operation(path, "post")["requestBody"]["content"]["application/json"]["schema"]
    }

    /// Panics unless `status` and `content_type` are documented for the operation and `body`
    /// validates against the documented schema.
    fn check_answer(&self, label: &str, path: &str, method: &str, answer: &Answer) {
        let responses = &self.operation(path, method)["responses"];
        let documented = &responses[answer.status.to_string()];
        assert!(
            documented.is_object(),
            "{label}: status {} is not documented (documented: {:?}); body {}",
            answer.status,
            responses.as_object().map(|r| r.keys().collect::<Vec<_>>()),
            String::from_utf8_lossy(&answer.body)
        );
        let essence = |t: &str| t.split(';').next().unwrap_or("").trim().to_owned();
        let content = documented["content"]
            .as_object()
            .into_iter()
            .flatten()
            .find(|(t, _)| essence(t) == essence(&answer.content_type))
            .map(|(_, c)| c)
            .unwrap_or_else(|| {
                panic!(
                    "{label}: {} with content type {:?} is not documented: {}",
                    answer.status, answer.content_type, documented["content"]
                )
            });
        if essence(&answer.content_type) != "application/json" {
            return;
        }
        let body: Value = serde_json::from_slice(&answer.body)
            .unwrap_or_else(|e| panic!("{label}: a JSON answer that is not JSON: {e}"));
        let errors = self.errors(&content["schema"], &body);
        assert!(
            errors.is_empty(),
            "{label}: the {} answer does not validate: {errors:?}\n{body}",
            answer.status
        );
    }
}

/// What the server answered.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.bytes().await.expect("a body").to_vec();
    Answer {
        status,
        content_type,
        body,
    }
}

/// How a request carries credentials.
#[derive(Debug, Clone, Copy)]
enum Credentials {
    Learn,
    None,
    Wrong,
    Twice,
}

async fn send(
    url: &str,
    method: &str,
    path: &str,
    credentials: Credentials,
    body: Option<(&str, Vec<u8>)>,
) -> Answer {
    let client = reqwest::Client::new();
    let mut request = client.request(
        method.to_uppercase().parse().expect("a method"),
        format!("{url}{path}"),
    );
    request = match credentials {
        Credentials::Learn => request.bearer_auth(LEARN),
        Credentials::None => request,
        Credentials::Wrong => request.bearer_auth("not-a-token"),
        Credentials::Twice => request
            .header("authorization", format!("Bearer {LEARN}"))
            .header("authorization", format!("Bearer {READ}")),
    };
    if let Some((content_type, bytes)) = body {
        request = request.header("content-type", content_type).body(bytes);
    }
    answer(request.send().await.expect("the server answers")).await
}

/// `path` with `{model_name}` filled in.
fn concrete(path: &str) -> String {
    path.replace("{model_name}", "ffd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_every_route_validates_and_every_example_is_taken() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = AccessTokens::from_env([("FFD_LEARN_TOKEN", LEARN), ("FFD_READ_TOKEN", READ)])
        .expect("valid tokens");
    let s = start_server_with(config(dir.path()), tokens, Some(LEARN)).await;
    let doc = Document(s.get_json("/openapi.json").await);
    assert_eq!(
        doc.request_schema("/learn")["$ref"],
        "#/components/schemas/LearnRequest"
    );
    assert_eq!(
        doc.0["components"]["schemas"]["Features"]["minItems"], 6,
        "the document states the configured feature count"
    );

    // Every operation, `/learn` last: its delayed-label example needs the id `/classify` keeps.
    let mut operations: Vec<(String, String)> = Vec::new();
    for (path, item) in doc.0["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            operations.push((path.clone(), method.clone()));
        }
    }
    operations.sort_by_key(|(path, _)| (path == "/learn", path.clone()));
    let mut examples_sent = 0;
    for (path, method) in &operations {
        let target = concrete(path);
        let op = doc.operation(path, method);
        let content = &op["requestBody"]["content"]["application/json"];
        let examples: BTreeMap<String, Value> = content["examples"]
            .as_object()
            .map(|e| {
                e.iter()
                    .map(|(name, example)| (name.clone(), example["value"].clone()))
                    .collect()
            })
            .unwrap_or_default();
        if examples.is_empty() {
            let a = send(&s.url, method, &target, Credentials::Learn, None).await;
            let label = format!("{method} {target}");
            assert!(
                (200..300).contains(&a.status),
                "{label}: {} {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            );
            doc.check_answer(&label, path, method, &a);
        }
        for (name, example) in &examples {
            let label = format!("{method} {target} example {name:?}");
            let errors = doc.errors(&content["schema"], example);
            assert!(errors.is_empty(), "{label} is not valid: {errors:?}");
            let body = serde_json::to_vec(example).expect("JSON");
            let a = send(
                &s.url,
                method,
                &target,
                Credentials::Learn,
                Some(("application/json", body)),
            )
            .await;
            assert!(
                (200..300).contains(&a.status),
                "{label} was refused: {} {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            );
            doc.check_answer(&label, path, method, &a);
            examples_sent += 1;
        }
        // Refusals: credentials, and for bodies, a few kinds of bad body.
        for credentials in [Credentials::None, Credentials::Wrong, Credentials::Twice] {
            let a = send(&s.url, method, &target, credentials, None).await;
            let label = format!("{method} {target} with {credentials:?} credentials");
            doc.check_answer(&label, path, method, &a);
            if path != "/openapi.json" && matches!(credentials, Credentials::Twice) {
                assert_eq!(a.status, 400, "{label}");
            }
        }
        if method == "post" && !path.starts_with("/admin") {
            for (content_type, body) in [
                ("application/json", b"{}".to_vec()),
                ("application/json", b"[1, 2".to_vec()),
                ("application/json", b"{\"samples\": []}".to_vec()),
                ("text/plain", b"hello".to_vec()),
            ] {
                let a = send(
                    &s.url,
                    method,
                    &target,
                    Credentials::Learn,
                    Some((content_type, body.clone())),
                )
                .await;
                let label = format!(
                    "{method} {target} with {content_type} {:?}",
                    String::from_utf8_lossy(&body)
                );
                assert!(a.status >= 400, "{label}: {}", a.status);
                doc.check_answer(&label, path, method, &a);
            }
        }
    }
    assert!(examples_sent >= 8, "only {examples_sent} request examples");

    // The binary form of a v2 answer is documented too.
    let infer = "/v2/models/{model_name}/infer";
    let body = json!({"inputs": [{"name": "features", "shape": [1, 6], "datatype": "FP32",
        "data": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]}], "parameters": {"binary_data_output": true}});
    let a = send(
        &s.url,
        "post",
        &concrete(infer),
        Credentials::Learn,
        Some(("application/json", serde_json::to_vec(&body).expect("JSON"))),
    )
    .await;
    assert_eq!(a.status, 200);
    doc.check_answer("binary v2 answer", infer, "post", &a);
    s.shutdown().await.expect("clean shutdown");
}

/// The largest feature the document allows and the smallest it refuses: 64-bit floats one step
/// apart at its bound, which is not an integer's distance (JSON encoders, serde_json's included,
/// write them as the shortest decimal that reads back as the same float: `1000000020545535.9`).
fn feature_edges(doc: &Document) -> (f64, f64) {
    let item = &doc.0["components"]["schemas"]["Features"]["items"];
    let step = |x: f64, up: bool| {
        assert!(x > 0.0);
        f64::from_bits(if up { x.to_bits() + 1 } else { x.to_bits() - 1 })
    };
    if let Some(max) = item["maximum"].as_f64() {
        (max, step(max, true))
    } else {
        let max = item["exclusiveMaximum"].as_f64().expect("a feature bound");
        (step(max, false), max)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_accepts_exactly_what_the_server_takes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = start_server_with(
        config(dir.path()),
        support::learn_token_only(),
        Some(support::LEARN_TOKEN),
    )
    .await;
    let doc = Document(s.get_json("/openapi.json").await);
    let (inside, outside) = feature_edges(&doc);
    let f = |v: f64| json!([v, 0.0, 0.0, 0.0, 0.0, 0.0]);
    let ok = f(0.5);
    let row = |n: usize| -> Vec<Value> { (0..n).map(|_| ok.clone()).collect() };
    let flat = |n: usize| -> Vec<f64> { vec![0.25; n] };

    let learn: Vec<Value> = vec![
        json!({"features": ok, "label": 3}),
        json!({"features": ok, "label": 4}),
        json!({"features": ok, "label": -1}),
        json!({"features": ok, "label": 1.5}),
        json!({"features": ok, "label": 2.0}),
        json!({"features": [0.5, 0.5, 0.5, 0.5, 0.5], "label": 0}),
        json!({"features": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], "label": 0}),
        json!({"features": f(inside), "label": 0}),
        json!({"features": f(-inside), "label": 0}),
        json!({"features": f(outside), "label": 0}),
        json!({"features": f(-outside), "label": 0}),
        json!({"features": f(1e300), "label": 0}),
        json!({"features": ok, "label": 0, "id": null, "samples": null}),
        json!({"features": ok, "label": 0, "id": "x"}),
        json!({"features": ok, "label": 0, "extra": 1}),
        json!({"features": ok}),
        json!({"label": 0}),
        json!({"id": "", "label": 0}),
        json!({"id": "x".repeat(257), "label": 0}),
        json!({"samples": []}),
        json!({"samples": row(3).into_iter().map(|x| json!({"features": x, "label": 1})).collect::<Vec<_>>()}),
        json!({"samples": row(4).into_iter().map(|x| json!({"features": x, "label": 1})).collect::<Vec<_>>()}),
        json!({"samples": [{"features": ok, "label": 1}], "label": 1}),
        json!({"samples": [{"features": ok, "label": 1, "id": null}], "features": null}),
        json!({"samples": [{"features": ok}]}),
        json!({"samples": [{"features": ok, "label": 1, "id": "x"}]}),
        json!([]),
        json!(null),
    ];
    let classify: Vec<Value> = vec![
        json!({"features": ok}),
        json!({"features": ok, "id": "é".repeat(256)}),
        json!({"features": ok, "id": "é".repeat(257)}),
        json!({"features": ok, "id": null}),
        json!({"features": ok, "id": ""}),
        json!({"features": f(outside)}),
        json!({"features": [0.5]}),
        json!({"samples": [{"features": ok}, {"features": ok, "id": "k"}]}),
        json!({"samples": [{"features": ok}], "id": "k"}),
        json!({"samples": [{"features": ok}], "id": null}),
        json!({"samples": []}),
        json!({"samples": row(4).into_iter().map(|x| json!({"features": x})).collect::<Vec<_>>()}),
        json!({"features": ok, "samples": [{"features": ok}]}),
        json!({}),
    ];
    let input = |shape: Value, data: Value| json!({"inputs": [{"name": "features", "shape": shape, "datatype": "FP32", "data": data}]});
    let mut infer: Vec<Value> = vec![
        input(json!([2, 6]), json!(row(2))),
        input(json!([-1, 6]), json!(row(3))),
        input(json!([-1, 6]), json!(flat(18))),
        input(json!([3, 6]), json!(flat(18))),
        input(json!([2, 6]), json!(flat(18))),
        input(json!([2, 6]), json!(row(3))),
        input(json!([-1, 6]), json!(row(4))),
        input(json!([4, 6]), json!(row(4))),
        input(json!([-1, 6]), json!(flat(17))),
        input(json!([0, 6]), json!([])),
        input(json!([-1, 6]), json!([])),
        input(json!([1, 5]), json!(flat(5))),
        input(json!([1, 6]), json!([f(outside)])),
        input(json!([1, 6]), json!([f(inside)])),
        json!({"inputs": []}),
        json!({"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP32", "data": flat(6)}]}),
        json!({"inputs": [{"name": "features", "shape": [1, 6], "datatype": "INT8", "data": flat(6)}]}),
        json!({"inputs": [{"name": "features", "shape": [1, 6], "datatype": "FP64", "data": flat(6)}]}),
        json!({"inputs": [{"name": "features", "shape": [1, 6], "datatype": "FP32", "data": flat(6),
            "parameters": {"binary_data_size": 24}}]}),
    ];
    for outputs in [
        json!([{"name": "label"}]),
        json!([{"name": "probabilities"}, {"name": "label", "parameters": {"binary_data": false}}]),
        json!([{"name": "label"}, {"name": "label"}]),
        json!([{"name": "label"}, {"name": "label", "parameters": {}}]),
        json!([]),
        json!([{"name": "scores"}]),
        json!(null),
    ] {
        let mut body = input(json!([1, 6]), json!(flat(6)));
        body["outputs"] = outputs;
        infer.push(body);
    }

    let mut checked = 0;
    for (path, bodies) in [
        ("/learn", learn),
        ("/classify", classify),
        ("/v2/models/{model_name}/infer", infer),
    ] {
        let schema = doc.request_schema(path).clone();
        let validator = doc.validator(&schema);
        for body in bodies {
            let valid = validator.is_valid(&body);
            let r = s.post(&concrete(path), &body).await;
            let status = r.status().as_u16();
            let text = r.text().await.expect("a body");
            assert_eq!(
                valid,
                (200..300).contains(&status),
                "POST {path} {body}: the document says {}, the server answered {status} {text}",
                if valid { "valid" } else { "invalid" },
            );
            checked += 1;
        }
    }
    assert!(checked > 50);

    // The same edges by name: each number at the bound is read as the 64-bit float it was
    // written from and rounded once to 32 bits, so the last one inside is taken and the first one
    // outside is refused as out of range; a number beyond the 32-bit range is not finite.
    for path in ["/learn", "/classify"] {
        for (value, want) in [
            (json!(inside), None),
            (json!(-inside), None),
            (json!(outside), Some("feature_out_of_range")),
            (json!(-outside), Some("feature_out_of_range")),
            (json!(1e39), Some("non_finite_feature")),
            (json!(-1e39), Some("non_finite_feature")),
        ] {
            let mut features = f(0.5);
            features[2] = value.clone();
            let body = match path {
                "/learn" => json!({"features": features, "label": 0}),
                _ => json!({"features": features}),
            };
            let r = s.post(path, &body).await;
            let status = r.status().as_u16();
            let text = r.text().await.expect("a body");
            match want {
                None => assert!(
                    (200..300).contains(&status),
                    "{path} {value}: {status} {text}"
                ),
                Some(code) => {
                    assert_eq!(status, 422, "{path} {value}: {text}");
                    let got: Value = serde_json::from_str(&text).expect("a JSON error");
                    assert_eq!(got["error"]["code"], code, "{path} {value}: {text}");
                }
            }
        }
    }
    s.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_document_states_the_configured_sizes() {
    let mut config = support::small_config();
    let mnist = ffd::service::http::openapi(&config);
    config.network.inputs = 10;
    config.network.classes = 3;
    config.http.max_batch_samples = 7;
    let small = ffd::service::http::openapi(&config);
    let schemas = |d: &Value| d["components"]["schemas"].clone();
    assert_eq!(schemas(&mnist)["Features"]["maxItems"], 784);
    assert_eq!(schemas(&mnist)["Label"]["maximum"], 9);
    assert_eq!(schemas(&small)["Features"]["minItems"], 10);
    assert_eq!(schemas(&small)["Label"]["maximum"], 2);
    let examples =
        &small["paths"]["/learn"]["post"]["requestBody"]["content"]["application/json"]["examples"];
    assert_eq!(
        examples["sample"]["value"]["features"]
            .as_array()
            .map(Vec::len),
        Some(10),
        "examples have the configured feature count"
    );
    let batch = &schemas(&small)["LearnRequest"]["oneOf"][2]["properties"]["samples"];
    assert_eq!(
        (batch["minItems"].clone(), batch["maxItems"].clone()),
        (json!(1), json!(7))
    );
}
