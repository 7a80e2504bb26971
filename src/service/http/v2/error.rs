//! The protocol's error shape, `{"error": "..."}`. Handlers and middleware under `/v2` fail
//! with the service's one `ApiError`; [`protocol_shape`], a layer of the `/v2` router only,
//! rewrites each error body into this shape, keeping status and headers (`WWW-Authenticate`,
//! `Retry-After`) and the logged detail of a 500.

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::service::http::error::ErrorMessage;
use crate::service::http::json::to_line;

/// The v2 error body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"error": "input `features`: shape [2, 784] needs 1568 values, data has 1567"}))]
pub struct V2ErrorBody {
    /// What is wrong, for a person.
    pub error: String,
}

/// Re-renders an `ApiError` answer as `{"error": "..."}`; other answers pass unchanged.
pub async fn protocol_shape(response: Response) -> Response {
    let Some(ErrorMessage(message)) = response.extensions().get::<ErrorMessage>().cloned() else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    // A struct of one string always serialises.
    let body = to_line(&V2ErrorBody { error: message }).unwrap_or_default();
    Response::from_parts(parts, Body::from(body))
}
