//! Access control: the learn token guards `/learn` and `/admin/*`, the read token `/classify`
//! and `/v1/model`; probes and `/metrics` stay open unless configured closed. No credentials
//! get 401 with `WWW-Authenticate: Bearer`, wrong ones 403, two `Authorization` headers 400,
//! and a refused request learns nothing.
use crate::support;

use crate::support::{error_code, sample_json, small_config, start_server_with};
use ffd::service::AccessTokens;
use serde_json::json;

const LEARN: &str = "learn-secret";
const READ: &str = "read-secret";

fn both_tokens() -> AccessTokens {
    AccessTokens::from_env([("FFD_LEARN_TOKEN", LEARN), ("FFD_READ_TOKEN", READ)])
        .expect("valid tokens")
}

/// A request to `path` with `token` as bearer (or none), using a client with no default token.
async fn send(
    url: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> reqwest::Response {
    let client = reqwest::Client::new();
    let mut req = match body {
        Some(b) => client.post(format!("{url}{path}")).json(b),
        None => client.get(format!("{url}{path}")),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("the server answers")
}

#[tokio::test]
async fn learn_needs_the_learn_token_and_refusals_learn_nothing() {
    let s = start_server_with(small_config(), both_tokens(), Some(LEARN)).await;
    let sample = sample_json(&[0.5; 784], 3);

    let r = send(&s.url, "/learn", None, Some(&sample)).await;
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    assert_eq!(error_code(r).await.0, 401);
    assert!(
        challenge
            .as_deref()
            .is_some_and(|c| c.starts_with("Bearer")),
        "401 without a Bearer challenge: {challenge:?}"
    );
    let r = send(&s.url, "/learn", Some("not-the-token"), Some(&sample)).await;
    assert_eq!(
        error_code(r).await,
        (
            403,
            "forbidden".into(),
            "the token does not grant access to this route".into()
        )
    );
    // The read token does not grant learning.
    let r = send(&s.url, "/learn", Some(READ), Some(&sample)).await;
    assert_eq!(error_code(r).await.0, 403);
    // Not a bearer token at all.
    let r = reqwest::Client::new()
        .post(format!("{}/learn", s.url))
        .basic_auth("user", Some(LEARN))
        .json(&sample)
        .send()
        .await
        .expect("the server answers");
    assert_eq!(error_code(r).await.0, 401);

    let model = s.model().await;
    assert_eq!(model["last_seq"], 0, "nothing was accepted: {model}");
    assert_eq!(model["queue_depth"], 0, "{model}");
    let scrape = s.metrics().await;
    assert_eq!(
        support::metric(&scrape, "ffd_samples_accepted_total"),
        Some(0.0)
    );

    let r = send(&s.url, "/learn", Some(LEARN), Some(&sample)).await;
    assert_eq!(r.status(), 202);
    s.wait_learned(1).await;
    s.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn read_routes_take_the_read_or_the_learn_token() {
    let s = start_server_with(small_config(), both_tokens(), Some(LEARN)).await;
    let body = json!({ "features": vec![0.0; 784] });
    let r = send(&s.url, "/classify", None, Some(&body)).await;
    assert_eq!(error_code(r).await.0, 401);
    let r = send(&s.url, "/classify", Some("wrong"), Some(&body)).await;
    assert_eq!(error_code(r).await.0, 403);
    for token in [READ, LEARN] {
        assert_eq!(
            send(&s.url, "/classify", Some(token), Some(&body))
                .await
                .status(),
            200
        );
        assert_eq!(
            send(&s.url, "/v1/model", Some(token), None).await.status(),
            200
        );
    }
    assert_eq!(
        error_code(send(&s.url, "/v1/model", None, None).await)
            .await
            .0,
        401
    );
    // The Open Inference Protocol routes share the read guard and answer its refusals in the
    // protocol's own error shape, `{"error": "..."}`, so its clients can read them.
    let infer = json!({"inputs": [{"name": "features", "shape": [1, 784], "datatype": "FP32",
        "data": vec![0.0; 784]}]});
    for (token, status) in [(None, 401), (Some("wrong"), 403)] {
        let r = send(&s.url, "/v2/models/ffd/infer", token, Some(&infer)).await;
        assert_eq!(r.status(), status);
        let challenge = r.headers().contains_key("www-authenticate");
        let body: serde_json::Value = r.json().await.expect("a JSON error");
        assert!(body["error"].is_string(), "not the v2 error shape: {body}");
        assert_eq!(challenge, status == 401, "WWW-Authenticate on {status}");
        let r = send(&s.url, "/v2/models/ffd", token, None).await;
        assert_eq!(r.status(), status);
    }
    let r = send(&s.url, "/v2/models/ffd/infer", Some(READ), Some(&infer)).await;
    assert_eq!(r.status(), 200);
    // Probes, metrics, the status page and the API description are open by default.
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v2/health/live",
        "/v2/health/ready",
        "/",
        "/v1/status",
        "/openapi.json",
    ] {
        assert_eq!(send(&s.url, path, None, None).await.status(), 200, "{path}");
    }
    // An unknown route is still 404, not 401.
    assert_eq!(
        error_code(send(&s.url, "/nope", None, None).await).await.0,
        404
    );
    s.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn admin_needs_the_learn_token() {
    let s = start_server_with(small_config(), both_tokens(), Some(LEARN)).await;
    let empty = json!({});
    assert_eq!(
        error_code(send(&s.url, "/admin/pause", None, Some(&empty)).await)
            .await
            .0,
        401
    );
    assert_eq!(
        error_code(send(&s.url, "/admin/pause", Some(READ), Some(&empty)).await)
            .await
            .0,
        403
    );
    assert_eq!(s.model().await["paused"], false);
    assert_eq!(
        send(&s.url, "/admin/pause", Some(LEARN), Some(&empty))
            .await
            .status(),
        200
    );
    assert_eq!(s.model().await["paused"], true);
    s.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn without_a_learn_token_admin_is_refused_and_the_rest_is_open() {
    let s = start_server_with(small_config(), AccessTokens::default(), None).await;
    let r = send(&s.url, "/admin/pause", None, Some(&json!({}))).await;
    let (status, code, message) = error_code(r).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    assert!(message.contains("FFD_LEARN_TOKEN"), "{message}");
    assert_eq!(s.model().await["paused"], false);
    let r = send(&s.url, "/learn", None, Some(&sample_json(&[0.5; 784], 1))).await;
    assert_eq!(r.status(), 202);
    s.wait_learned(1).await;
    s.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn metrics_and_probes_can_be_closed() {
    let mut config = small_config();
    config.auth.metrics_open = false;
    config.auth.health_open = false;
    let s = start_server_with(config.clone(), both_tokens(), Some(LEARN)).await;
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            error_code(send(&s.url, path, None, None).await).await.0,
            401,
            "{path}"
        );
        assert_eq!(
            send(&s.url, path, Some(READ), None).await.status(),
            200,
            "{path}"
        );
    }
    s.shutdown().await.expect("clean shutdown");

    // Closing them with no token to open them is a configuration error.
    let err = ffd::service::Service::start(config, AccessTokens::default())
        .expect_err("closed routes need a token");
    assert!(err.to_string().contains("auth.metrics_open"), "{err}");
}

#[tokio::test]
async fn two_authorization_headers_are_refused_on_every_guarded_route() {
    let s = start_server_with(small_config(), both_tokens(), Some(LEARN)).await;
    let sample = sample_json(&[0.5; 784], 3);
    let client = reqwest::Client::new();
    // Even when the first header holds the right token: a proxy in front could read the other.
    for (first, second) in [
        (LEARN, "not-the-token"),
        ("not-the-token", LEARN),
        (LEARN, LEARN),
    ] {
        for (path, body) in [
            ("/learn", Some(&sample)),
            ("/classify", Some(&json!({ "features": vec![0.5; 784] }))),
            ("/v1/model", None),
            ("/healthz", None),
            ("/metrics", None),
            ("/v2/health/live", None),
        ] {
            let mut req = match body {
                Some(b) => client.post(format!("{}{path}", s.url)).json(b),
                None => client.get(format!("{}{path}", s.url)),
            };
            req = req
                .header("authorization", format!("Bearer {first}"))
                .header("authorization", format!("Bearer {second}"));
            let r = req.send().await.expect("the server answers");
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.expect("a JSON error");
            assert_eq!(status, 400, "{path}: {body}");
            // v1 routes answer `{"error": {"code", "message"}}`, v2 routes `{"error": "..."}`.
            let message = body["error"]["message"]
                .as_str()
                .or(body["error"].as_str())
                .unwrap_or_default();
            assert!(
                message.contains("more than one Authorization header"),
                "{path}: {body}"
            );
            if !path.starts_with("/v2") {
                assert_eq!(body["error"]["code"], "duplicate_authorization", "{path}");
            }
        }
    }
    let r = client
        .post(format!("{}/admin/pause", s.url))
        .header("authorization", format!("Bearer {LEARN}"))
        .header("authorization", format!("Bearer {LEARN}"))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(error_code(r).await.1, "duplicate_authorization");
    let model = s.model().await;
    assert_eq!(model["last_seq"], 0, "nothing was accepted: {model}");
    assert_eq!(
        model["paused"], false,
        "the admin request was refused: {model}"
    );
    s.shutdown().await.expect("clean shutdown");
}
