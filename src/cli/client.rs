//! `ApiClient`: the HTTP client side of ffd's API, shared by `ffd replay` and `ffd healthcheck`.
//! Every failure becomes an error that names the request and, for an API error, the server's
//! `{"error": {"code", "message"}}`.

pub mod body;
pub mod exposition;
pub mod retry;
pub mod wire;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Response, StatusCode};
use serde::de::DeserializeOwned;

use retry::{parse_retry_after, Decision, RetryPolicy};
use wire::{ErrorReply, LearnReceipt, ModelSummary, Prediction, Predictions};

/// A client of one ffd server.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    /// `scheme://host:port[/prefix]` without a trailing slash.
    base: String,
}

/// A response body is quoted in an error message up to this many bytes.
const QUOTED_BODY_BYTES: usize = 300;

impl ApiClient {
    /// A client of the server at `url` (`http://host:port`, optionally with a path prefix) whose
    /// requests each time out after `timeout`. Fails on a URL that is not plain `http`: this
    /// build has no TLS. Proxy environment variables are ignored, so loopback stays loopback.
    /// With a `token`, every request carries it as `Authorization: Bearer` (marked sensitive, so
    /// it is never shown in debug output).
    pub fn with_token(url: &str, timeout: Duration, token: Option<&str>) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base).with_context(|| format!("bad URL {url:?}"))?;
        match parsed.scheme() {
            "http" => {}
            "https" => bail!("bad URL {url:?}: https is not supported (this build has no TLS)"),
            other => bail!("bad URL {url:?}: unsupported scheme {other:?}, expected http"),
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            bail!("bad URL {url:?}: expected no query or fragment");
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the token contains characters an HTTP header cannot carry")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        Ok(Self { http, base })
    }

    /// The server's base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path`; any answer, successful or not, is returned.
    pub async fn get(&self, path: &str) -> anyhow::Result<Response> {
        let url = self.url(path);
        self.http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}: no answer"))
    }

    /// `GET path` decoded from JSON; a non-2xx answer is an error.
    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self.get(path).await?;
        decode(success(response, "GET", path).await?, "GET", path).await
    }

    /// `GET /v1/model`.
    pub async fn model(&self) -> anyhow::Result<ModelSummary> {
        self.get_json("/v1/model").await
    }

    /// `GET /metrics`: the Prometheus text exposition.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let response = success(self.get("/metrics").await?, "GET", "/metrics").await?;
        response
            .text()
            .await
            .with_context(|| format!("GET {}: reading the body", self.url("/metrics")))
    }

    /// `POST /learn` with a JSON batch of `samples` samples, retried on 429 as `policy` says.
    /// Returns the answer and the number of retries. Fails if the server accepted a different
    /// number of samples than were sent.
    pub async fn learn(
        &self,
        body: Bytes,
        samples: usize,
        policy: &RetryPolicy,
    ) -> anyhow::Result<(LearnReceipt, u32)> {
        let (response, retries) = self.post_json("/learn", body, policy).await?;
        let accepted: LearnReceipt = decode(response, "POST", "/learn").await?;
        if accepted.accepted != samples as u64 {
            bail!(
                "POST {}: the server accepted {} samples of a batch of {samples}",
                self.url("/learn"),
                accepted.accepted
            );
        }
        Ok((accepted, retries))
    }

    /// `POST /classify` with a JSON batch of `samples` samples, retried on 429 as `policy` says.
    /// Fails if the number of results differs from `samples`.
    pub async fn classify(
        &self,
        body: Bytes,
        samples: usize,
        policy: &RetryPolicy,
    ) -> anyhow::Result<(Vec<Prediction>, u32)> {
        let (response, retries) = self.post_json("/classify", body, policy).await?;
        let results: Predictions = decode(response, "POST", "/classify").await?;
        if results.results.len() != samples {
            bail!(
                "POST {}: {} results for a batch of {samples} samples",
                self.url("/classify"),
                results.results.len()
            );
        }
        Ok((results.results, retries))
    }

    /// `POST path` with a JSON `body`, sent again while the server answers 429 and `policy`
    /// allows. Returns the 2xx answer and the number of retries; any other answer is an error.
    async fn post_json(
        &self,
        path: &str,
        body: Bytes,
        policy: &RetryPolicy,
    ) -> anyhow::Result<(Response, u32)> {
        let url = self.url(path);
        let mut retries = 0u32;
        let mut first_refusal: Option<Instant> = None;
        loop {
            let response = self
                .http
                .post(&url)
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await
                .with_context(|| format!("POST {url}: no answer"))?;
            let status = response.status();
            if status.is_success() {
                return Ok((response, retries));
            }
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let refused_at = *first_refusal.get_or_insert_with(Instant::now);
            match policy.decide(status.as_u16(), retry_after, retries, refused_at.elapsed()) {
                Decision::Retry(pause) => {
                    // Read the (small) error body so the connection can be reused.
                    let _ = response.bytes().await;
                    tokio::time::sleep(pause).await;
                    retries += 1;
                }
                Decision::GiveUp => bail!(
                    "POST {url}: the server kept answering {status} (learner queue full) for {:.0} s \
                     over {} retries; is the learner stuck?",
                    refused_at.elapsed().as_secs_f64(),
                    retries
                ),
                Decision::Fail => return Err(api_error(response, "POST", path).await),
            }
        }
    }
}

/// `response` if its status is 2xx, else an error describing it.
async fn success(response: Response, method: &str, path: &str) -> anyhow::Result<Response> {
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(api_error(response, method, path).await)
    }
}

/// Decodes a JSON body, with an error naming the request.
async fn decode<T: DeserializeOwned>(
    response: Response,
    method: &str,
    path: &str,
) -> anyhow::Result<T> {
    let url = response.url().to_string();
    let bytes = response
        .bytes()
        .await
        .with_context(|| format!("{method} {url}: reading the body"))?;
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{method} {path}: unexpected answer {}",
            quote(&bytes, QUOTED_BODY_BYTES)
        )
    })
}

/// An error describing a non-success answer: status, then the server's error code and message,
/// or the start of the body if it is not an API error.
async fn api_error(response: Response, method: &str, path: &str) -> anyhow::Error {
    let status = response.status();
    let url = response.url().to_string();
    let bytes = response.bytes().await.unwrap_or_default();
    describe_error(method, &url, status, &bytes, path)
}

fn describe_error(
    method: &str,
    url: &str,
    status: StatusCode,
    body: &[u8],
    path: &str,
) -> anyhow::Error {
    let hint = match status.as_u16() {
        404 => format!(" (no route {path}: is the URL that of an ffd server?)"),
        503 => " (the server is shutting down)".to_owned(),
        _ => String::new(),
    };
    match serde_json::from_slice::<ErrorReply>(body) {
        Ok(ErrorReply { error }) => anyhow::anyhow!(
            "{method} {url}: {status}: {}: {}{hint}",
            error.code,
            error.message
        ),
        Err(_) if body.is_empty() => anyhow::anyhow!("{method} {url}: {status}{hint}"),
        Err(_) => anyhow::anyhow!(
            "{method} {url}: {status}: {}{hint}",
            quote(body, QUOTED_BODY_BYTES)
        ),
    }
}

/// The first `limit` bytes of `body` as (lossy) text, marked if cut.
fn quote(body: &[u8], limit: usize) -> String {
    let cut = body.len() > limit;
    let text = String::from_utf8_lossy(&body[..body.len().min(limit)]);
    if cut {
        format!("{text:?}…")
    } else {
        format!("{text:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_plain_http() {
        let t = Duration::from_secs(1);
        let client = ApiClient::with_token("http://127.0.0.1:8080/", t, None).unwrap();
        assert_eq!(client.base(), "http://127.0.0.1:8080");
        assert_eq!(client.url("/learn"), "http://127.0.0.1:8080/learn");
        let prefixed = ApiClient::with_token("http://example.test/ffd//", t, None).unwrap();
        assert_eq!(prefixed.url("/healthz"), "http://example.test/ffd/healthz");
        for (bad, why) in [
            ("https://127.0.0.1:8080", "https is not supported"),
            ("ftp://127.0.0.1", "unsupported scheme"),
            ("127.0.0.1:8080", "bad URL"),
            ("not a url", "bad URL"),
            ("http://h/?q=1", "no query"),
        ] {
            let message = format!("{:#}", ApiClient::with_token(bad, t, None).unwrap_err());
            assert!(message.contains(why), "{bad}: {message}");
        }
    }

    #[test]
    fn api_errors_quote_code_and_message() {
        let body = br#"{"error":{"code":"invalid_sample","message":"sample 3: features has 783 values, expected 784"}}"#;
        let e = describe_error(
            "POST",
            "http://h/learn",
            StatusCode::UNPROCESSABLE_ENTITY,
            body,
            "/learn",
        );
        assert_eq!(
            e.to_string(),
            "POST http://h/learn: 422 Unprocessable Entity: invalid_sample: \
             sample 3: features has 783 values, expected 784"
        );
        let e = describe_error(
            "GET",
            "http://h/v1/model",
            StatusCode::NOT_FOUND,
            b"",
            "/v1/model",
        );
        assert!(
            e.to_string()
                .contains("404 Not Found (no route /v1/model: is the URL"),
            "{e}"
        );
        let long = vec![b'x'; 1000];
        let e = describe_error(
            "POST",
            "http://h/learn",
            StatusCode::BAD_GATEWAY,
            &long,
            "/learn",
        );
        let message = e.to_string();
        assert!(message.contains("502 Bad Gateway: \"xxx"), "{message}");
        assert!(message.ends_with('…') && message.len() < 400, "{message}");
    }
}
