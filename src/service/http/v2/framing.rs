//! Framing of Triton's binary tensor extension: a body is JSON followed by raw tensor bytes,
//! and the `Inference-Header-Content-Length` header gives the JSON's length. Requests are split
//! here; responses with binary outputs are joined here.

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::service::http::error::ApiError;

/// The header with the length of the JSON part of a body whose binary tensors follow the JSON.
pub const BINARY_HEADER: &str = "inference-header-content-length";

/// Splits a body into its JSON and the binary tensors after it, as the
/// `Inference-Header-Content-Length` header says; the whole body is JSON without it. The body
/// is JSON whatever its `Content-Type` says: clients differ (some send none, curl sends a form
/// type, `tritonclient` sends none with binary tensors).
pub fn split(headers: &HeaderMap, body: Bytes) -> Result<(Bytes, Bytes), ApiError> {
    let Some(value) = headers.get(BINARY_HEADER) else {
        return Ok((body, Bytes::new()));
    };
    let json_len = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or_else(|| {
            ApiError::InvalidInference("Inference-Header-Content-Length is not a number".into())
        })?;
    if json_len > body.len() {
        return Err(ApiError::InvalidInference(format!(
            "Inference-Header-Content-Length is {json_len}, but the body has {} bytes",
            body.len()
        )));
    }
    let mut json = body;
    let binary = json.split_off(json_len);
    Ok((json, binary))
}

/// A response of `json` followed by the binary outputs' bytes `tail`, with the JSON's length in
/// `Inference-Header-Content-Length`.
pub fn join(mut json: Vec<u8>, tail: &[u8]) -> Response {
    let json_len = json.len();
    json.extend_from_slice(tail);
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        json,
    )
        .into_response();
    response
        .headers_mut()
        .insert(BINARY_HEADER, HeaderValue::from(json_len));
    response
}
