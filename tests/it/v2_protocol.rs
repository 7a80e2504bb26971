//! The Open Inference Protocol (KServe v2) REST endpoints answer real requests in the
//! protocol's shapes: health, server and model metadata, readiness, and inference on two
//! samples (nested and flat data, `outputs` selection) whose labels and probabilities are those
//! `/classify` gives for the same features. Bad requests get 400 `{"error": "..."}`, an unknown
//! model 404, and inference never learns.
use crate::support;

use crate::support::{batch_json, small_config, start_server, TestServer};
use serde_json::{json, Value};

async fn get(s: &TestServer, path: &str) -> (u16, Value) {
    let r = s
        .client
        .get(format!("{}{path}", s.url))
        .send()
        .await
        .expect("the server answers");
    let status = r.status().as_u16();
    (status, r.json().await.expect("a JSON body"))
}

async fn post(s: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let r = s.post(path, body).await;
    let status = r.status().as_u16();
    (status, r.json().await.expect("a JSON body"))
}

/// A v2 error: the status and the `error` string (the body must be exactly `{"error": "..."}`).
async fn v2_error(s: &TestServer, path: &str, body: &Value) -> (u16, String) {
    let (status, body) = post(s, path, body).await;
    let object = body.as_object().expect("an object");
    assert_eq!(object.len(), 1, "extra fields in {body}");
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error string in {body}"))
        .to_owned();
    (status, message)
}

fn output<'a>(response: &'a Value, name: &str) -> &'a Value {
    response["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name} in {response}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metadata() {
    let s = start_server(small_config()).await;
    assert_eq!(
        get(&s, "/v2/health/live").await,
        (200, json!({"live": true}))
    );
    assert_eq!(
        get(&s, "/v2/health/ready").await,
        (200, json!({"ready": true}))
    );
    assert_eq!(
        get(&s, "/v2/models/ffd/ready").await,
        (200, json!({"name": "ffd", "ready": true}))
    );

    let (status, server) = get(&s, "/v2").await;
    assert_eq!(status, 200);
    assert_eq!(server["name"], "ffd");
    assert_eq!(server["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(server["extensions"], json!(["binary_tensor_data"]));

    let (status, model) = get(&s, "/v2/models/ffd").await;
    assert_eq!(status, 200);
    assert_eq!(model["name"], "ffd");
    assert!(model["platform"].is_string());
    assert_eq!(
        model["inputs"],
        json!([{"name": "features", "datatype": "FP32", "shape": [-1, 784]}])
    );
    assert_eq!(
        model["outputs"],
        json!([
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}
        ])
    );

    for path in ["/v2/models/resnet", "/v2/models/resnet/ready"] {
        let (status, body) = get(&s, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("resnet")),
            "{body}"
        );
    }
    s.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sample_inference_matches_classify() {
    let data = support::mnist_small();
    let s = start_server(small_config()).await;
    assert_eq!(
        s.post("/learn", &batch_json(&data.train, 0..300))
            .await
            .status(),
        202
    );
    let before = s.wait_learned(300).await;

    let (a, b) = (data.test.sample(0).0, data.test.sample(1).0);
    let (status, classified) = post(
        &s,
        "/classify",
        &json!({"samples": [{"features": a}, {"features": b}]}),
    )
    .await;
    assert_eq!(status, 200);
    let results = classified["results"].as_array().expect("results");

    let nested = json!({
        "id": "two",
        "inputs": [{"name": "features", "shape": [2, 784], "datatype": "FP32", "data": [a, b]}]
    });
    let (status, response) = post(&s, "/v2/models/ffd/infer", &nested).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["model_name"], "ffd");
    assert_eq!(response["id"], "two");
    assert_eq!(
        response["model_version"],
        results[0]["model_version"].to_string(),
        "answered by the snapshot /classify used"
    );
    assert_eq!(response["outputs"].as_array().map(Vec::len), Some(2));

    let label = output(&response, "label");
    assert_eq!(label["datatype"], "INT64");
    assert_eq!(label["shape"], json!([2]));
    assert_eq!(
        label["data"],
        json!([results[0]["label"], results[1]["label"]])
    );

    let probabilities = output(&response, "probabilities");
    assert_eq!(probabilities["datatype"], "FP32");
    assert_eq!(probabilities["shape"], json!([2, 10]));
    let got: Vec<f64> = probabilities["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect();
    let expected: Vec<f64> = results
        .iter()
        .flat_map(|r| {
            r["probabilities"]
                .as_array()
                .expect("probabilities")
                .clone()
        })
        .map(|v| v.as_f64().expect("a number"))
        .collect();
    assert_eq!(got.len(), 20);
    for (g, e) in got.iter().zip(&expected) {
        assert!(
            (g - e).abs() < 1e-6,
            "probabilities {got:?} vs /classify {expected:?}"
        );
    }
    for row in got.chunks(10) {
        assert!(
            (row.iter().sum::<f64>() - 1.0).abs() < 1e-4,
            "a row sums to 1: {row:?}"
        );
    }

    // The same samples as flat row-major data, batch size from the data, one output.
    let flat: Vec<f32> = a.iter().chain(b).copied().collect();
    let (status, only_labels) = post(
        &s,
        "/v2/models/ffd/infer",
        &json!({
            "inputs": [{"name": "features", "shape": [-1, 784], "datatype": "FP32", "data": flat}],
            "outputs": [{"name": "label"}]
        }),
    )
    .await;
    assert_eq!(status, 200, "{only_labels}");
    assert!(only_labels.get("id").is_none());
    assert_eq!(only_labels["outputs"].as_array().map(Vec::len), Some(1));
    assert_eq!(output(&only_labels, "label")["data"], label["data"]);

    // Outputs come in the order asked for.
    let (status, ordered) = post(
        &s,
        "/v2/models/ffd/infer",
        &json!({
            "inputs": [{"name": "features", "shape": [2, 784], "datatype": "FP64", "data": flat}],
            "outputs": [{"name": "probabilities"}, {"name": "label", "parameters": {"binary_data": false}}]
        }),
    )
    .await;
    assert_eq!(status, 200, "{ordered}");
    let names: Vec<&str> = ordered["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| o["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["probabilities", "label"]);
    assert_eq!(output(&ordered, "label")["data"], label["data"]);

    // Triton's binary tensor extension: JSON, then the input's little-endian FP32 values; the
    // label comes back as little-endian INT64 after the JSON, the probabilities as JSON.
    let header = serde_json::to_vec(&json!({
        "inputs": [{"name": "features", "shape": [2, 784], "datatype": "FP32",
                    "parameters": {"binary_data_size": flat.len() * 4}}],
        "outputs": [{"name": "label", "parameters": {"binary_data": true}}, {"name": "probabilities"}]
    }))
    .expect("JSON");
    let mut body = header.clone();
    body.extend(flat.iter().flat_map(|v| v.to_le_bytes()));
    let r = s
        .client
        .post(format!("{}/v2/models/ffd/infer", s.url))
        .header("Inference-Header-Content-Length", header.len())
        .body(body)
        .send()
        .await
        .expect("the server answers");
    assert_eq!(r.status(), 200);
    let json_len: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("a length");
    let bytes = r.bytes().await.expect("a body");
    let (json_part, binary) = bytes.split_at(json_len);
    let binary_response: Value = serde_json::from_slice(json_part).expect("the JSON part");
    let binary_label = output(&binary_response, "label");
    assert_eq!(binary_label["parameters"]["binary_data_size"], 16);
    assert!(binary_label.get("data").is_none(), "{binary_label}");
    let labels_le: Vec<i64> = binary
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    assert_eq!(json!(labels_le), label["data"]);
    assert_eq!(
        output(&binary_response, "probabilities")["data"],
        probabilities["data"]
    );

    // Inference learns nothing.
    let after = s.model().await;
    assert_eq!(after["samples_learned"], before["samples_learned"]);
    assert_eq!(after["last_seq"], before["last_seq"]);
    s.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_400_with_an_error_string() {
    let s = start_server(small_config()).await;
    let row = vec![0.5f32; 784];
    let input = |shape: Value, datatype: &str, data: Value| json!({"inputs": [{"name": "features", "shape": shape, "datatype": datatype, "data": data}]});
    let cases = [
        (
            "data shorter than the shape",
            input(json!([2, 784]), "FP32", json!([row])),
            "2",
        ),
        (
            "wrong width",
            input(json!([1, 783]), "FP32", json!([row[..783]])),
            "783",
        ),
        (
            "three dimensions",
            input(json!([1, 1, 784]), "FP32", json!([[row]])),
            "shape",
        ),
        (
            "integer datatype",
            input(json!([1, 784]), "INT32", json!([row])),
            "INT32",
        ),
        (
            "ragged rows",
            input(json!([2, 784]), "FP32", json!([row, row[..10]])),
            "row 1",
        ),
        (
            "a string value",
            input(json!([1, 784]), "FP32", json!(["a"])),
            "not a number",
        ),
        (
            "beyond FP32",
            input(json!([1, 784]), "FP64", json!([vec![1e39f64; 784]])),
            "finite",
        ),
        (
            "wrong input name",
            json!({"inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "FP32", "data": row}]}),
            "pixels",
        ),
        ("no inputs", json!({"inputs": []}), "one input"),
        (
            "unknown output",
            json!({"inputs": [{"name": "features", "shape": [1, 784], "datatype": "FP32", "data": row}],
                   "outputs": [{"name": "logits"}]}),
            "logits",
        ),
        (
            "binary size without the bytes",
            json!({"inputs": [{"name": "features", "shape": [1, 784], "datatype": "FP32",
                               "parameters": {"binary_data_size": 3136}}]}),
            "3136",
        ),
        (
            "no data",
            json!({"inputs": [{"name": "features", "shape": [1, 784], "datatype": "FP32"}]}),
            "no `data`",
        ),
        ("missing inputs", json!({"id": "x"}), "inputs"),
    ];
    for (what, body, mention) in cases {
        let (status, message) = v2_error(&s, "/v2/models/ffd/infer", &body).await;
        assert_eq!(status, 400, "{what}: {message}");
        assert!(
            message.contains(mention),
            "{what}: {message:?} should mention {mention:?}"
        );
    }

    let r = s
        .post_raw(
            "/v2/models/ffd/infer",
            "application/json",
            b"{\"inputs\": [".to_vec(),
        )
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.expect("a JSON body");
    assert!(body["error"].is_string(), "{body}");

    let (status, message) = v2_error(
        &s,
        "/v2/models/resnet/infer",
        &input(json!([1, 784]), "FP32", json!([row])),
    )
    .await;
    assert_eq!(status, 404);
    assert!(message.contains("resnet"), "{message}");

    let model = s.model().await;
    assert_eq!(model["last_seq"], 0, "nothing was queued");
    s.shutdown().await.expect("clean shutdown");
}
