//! `/openapi.json` documents exactly the routes the server serves. The routes the router serves
//! are read from the router itself (axum's `Debug` output lists its path table), the documented
//! ones from the OpenAPI document; then a live server must answer every documented operation
//! (never 404 or 405), every JSON answer ending with a newline, and refuse every undocumented
//! method on a served path with 405. A route added without `#[utoipa::path]` and `routes!`
//! fails here.
use crate::support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

/// Methods checked against the document on every served path.
const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// The paths of the router's path table, from its `Debug` output (`paths: {RouteId(0):
/// "/learn", ...}`), leaving out the fallback router's table and axum's internal catch-alls.
fn served_paths(router: &axum::Router) -> BTreeSet<String> {
    let text = format!("{router:?}");
    let table = text
        .split("fallback_router")
        .next()
        .expect("split yields at least one piece");
    let mut paths = BTreeSet::new();
    let mut rest = table;
    while let Some(at) = rest.find("RouteId(") {
        rest = &rest[at..];
        let Some(quote) = rest.find(": \"") else {
            break;
        };
        let after = &rest[quote + 3..];
        let end = after.find('"').expect("a closed path string");
        let path = &after[..end];
        if !path.contains("__private__axum") {
            paths.insert(path.to_owned());
        }
        rest = &after[end..];
    }
    paths
}

/// `(path, {method: operation})` of every documented path.
fn documented(document: &Value) -> BTreeMap<String, BTreeMap<String, Value>> {
    document["paths"]
        .as_object()
        .expect("the document has paths")
        .iter()
        .map(|(path, item)| {
            let ops = item
                .as_object()
                .expect("a path item is an object")
                .iter()
                .filter(|(method, _)| METHODS.contains(&method.as_str()))
                .map(|(m, op)| (m.clone(), op.clone()))
                .collect();
            (path.clone(), ops)
        })
        .collect()
}

/// `path` with each `{param}` replaced by the example its operation documents.
fn concrete(path: &str, operation: &Value) -> String {
    let mut out = path.to_owned();
    for p in operation["parameters"].as_array().into_iter().flatten() {
        if p["in"] == "path" {
            let name = p["name"].as_str().expect("a named parameter");
            let example = p["example"]
                .as_str()
                .unwrap_or_else(|| panic!("path parameter {name} of {path} has no example"));
            out = out.replace(&format!("{{{name}}}"), example);
        }
    }
    assert!(!out.contains('{'), "{path}: undocumented path parameter");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_every_route_the_router_serves() {
    let config = support::small_config();
    let service =
        ffd::service::Service::start(config.clone(), ffd::service::AccessTokens::default())
            .expect("valid config");
    let served = served_paths(&service.router());
    assert!(
        served.len() >= 9,
        "could not read the router's paths: {served:?}"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let url = format!("http://{}", listener.local_addr().expect("bound address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service.serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();

    let response = client
        .get(format!("{url}/openapi.json"))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.expect("a JSON document");
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "not OpenAPI 3.1: {}",
        document["openapi"]
    );
    assert_eq!(
        document,
        ffd::service::http::openapi(&config),
        "/openapi.json differs from http::openapi(config)"
    );

    let paths = documented(&document);
    let documented_paths: BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(
        served, documented_paths,
        "served (left) and documented (right) paths differ"
    );

    for (path, operations) in &paths {
        assert!(!operations.is_empty(), "{path} documents no operation");
        let mut example_path = None;
        for (method, operation) in operations {
            let target = concrete(path, operation);
            let request = client.request(
                method.to_uppercase().parse().expect("a method"),
                format!("{url}{target}"),
            );
            let request = if method == "post" {
                request.json(&json!({}))
            } else {
                request
            };
            let response = request.send().await.expect("the server answers");
            let status = response.status();
            assert!(
                status != 404 && status != 405,
                "{} {target} is documented but answers {status}",
                method.to_uppercase()
            );
            let json = response
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
            let body = response.bytes().await.expect("a body");
            if json {
                assert!(
                    body.ends_with(b"\n"),
                    "{} {target}: a JSON body without a final newline",
                    method.to_uppercase()
                );
            }
            example_path = Some(target);
        }
        let target = example_path.expect("at least one operation");
        for method in METHODS.iter().filter(|m| !operations.contains_key(**m)) {
            let status = client
                .request(
                    method.to_uppercase().parse().expect("a method"),
                    format!("{url}{target}"),
                )
                .send()
                .await
                .expect("the server answers")
                .status();
            assert_eq!(
                status,
                405,
                "{} {target} is not documented but answers {status}",
                method.to_uppercase()
            );
        }
    }

    let _ = stop.send(());
    server
        .await
        .expect("the serve task does not panic")
        .expect("a clean shutdown");
}

#[test]
fn every_operation_documents_its_responses_and_errors() {
    let document = ffd::service::http::openapi(&support::small_config());
    for (path, operations) in documented(&document) {
        for (method, operation) in operations {
            let responses = operation["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path}: no responses"));
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path}: no success response"
            );
            for (status, response) in responses {
                let content = response["content"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{method} {path} {status}: no content"));
                assert!(
                    !content.is_empty(),
                    "{method} {path} {status}: no content type"
                );
                if status.starts_with('4') || status.starts_with('5') {
                    // One schema, or (a v2 readiness answer) `anyOf` it and the error body.
                    let schema = &content
                        .get("application/json")
                        .unwrap_or_else(|| panic!("{method} {path} {status}: not JSON"))["schema"];
                    let schema = schema["anyOf"]
                        .as_array()
                        .and_then(|a| a.last())
                        .unwrap_or(schema)["$ref"]
                        .as_str()
                        .unwrap_or("");
                    let expected = if path.starts_with("/v2") {
                        [
                            "#/components/schemas/V2ErrorBody",
                            "#/components/schemas/ReadyResponse",
                            "#/components/schemas/ModelReadyResponse",
                        ]
                        .as_slice()
                    } else {
                        [
                            "#/components/schemas/ErrorBody",
                            "#/components/schemas/ReadinessError",
                        ]
                        .as_slice()
                    };
                    assert!(
                        expected.contains(&schema),
                        "{method} {path} {status}: error schema {schema:?}"
                    );
                }
            }
            if method == "post" && path != "/admin/sleep" && !path.starts_with("/admin") {
                let body = &operation["requestBody"]["content"];
                assert!(
                    body.as_object().is_some_and(|c| !c.is_empty()),
                    "{method} {path}: no request body schema"
                );
                assert!(
                    body.as_object()
                        .into_iter()
                        .flatten()
                        .all(|(_, c)| c.get("example").is_some() || c.get("examples").is_some()),
                    "{method} {path}: no request example"
                );
            }
        }
    }
    let codes: Vec<&str> = ffd::service::http::error::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(
        document["components"]["schemas"]["ErrorCode"]["enum"],
        json!(codes),
        "the document's error codes are the error table's"
    );
    for schema in [
        "ErrorBody",
        "V2ErrorBody",
        "InferRequest",
        "InferResponse",
        "HistoryResponse",
        "ErrorCode",
    ] {
        assert!(
            document["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }
}

#[test]
fn every_operation_documents_the_token_it_needs() {
    let document = ffd::service::http::openapi(&support::small_config());
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer",
        "no bearer scheme: {}",
        document["components"]["securitySchemes"]
    );
    for (path, operations) in documented(&document) {
        for (method, operation) in operations {
            let needs_token = operation["security"]
                .as_array()
                .is_some_and(|alternatives| alternatives.iter().all(|a| a.get("bearer").is_some()));
            let mentions_token = operation["security"]
                .as_array()
                .is_some_and(|alternatives| alternatives.iter().any(|a| a.get("bearer").is_some()));
            if path == "/openapi.json" {
                assert!(!mentions_token, "{method} {path} is open");
                continue;
            }
            assert!(mentions_token, "{method} {path}: no security requirement");
            assert_eq!(
                needs_token,
                path == "/learn" || path.starts_with("/admin"),
                "{method} {path}: only /learn and /admin/* always need a token"
            );
            for status in ["401", "403"] {
                assert!(
                    operation["responses"].get(status).is_some(),
                    "{method} {path}: {status} not documented"
                );
            }
        }
    }
}
