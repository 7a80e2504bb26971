//! `Json`: the response body of every JSON answer, ending in a newline so `curl` output and
//! line-based tools (shell pipes, `jq -c`, log shippers) see a complete line. Handlers and
//! [`super::error::ApiError`] answer with it instead of axum's `Json`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::service::http::extract::JSON;

/// A JSON response body followed by `\n`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

/// `value` as JSON text with a final newline.
pub fn to_line<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut bytes = serde_json::to_vec(value)?;
    bytes.push(b'\n');
    Ok(bytes)
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match to_line(&self.0) {
            Ok(bytes) => (
                [(header::CONTENT_TYPE, HeaderValue::from_static(JSON))],
                bytes,
            )
                .into_response(),
            // Only a map with non-string keys or a failing `Serialize` impl gets here: a bug, so
            // a plain 500 (an `ApiError` would serialise through this same path).
            Err(e) => {
                tracing::error!(error = %e, "serialising a response failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, HeaderValue::from_static(JSON))],
                    "{\"error\":{\"code\":\"internal\",\"message\":\"internal error\"}}\n",
                )
                    .into_response()
            }
        }
    }
}
