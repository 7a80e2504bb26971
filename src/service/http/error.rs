//! `ApiError`: every way a request can fail, and its one `IntoResponse`: a status and
//! `{"error": {"code", "message"}}` (plus `accepted` and `last_seq` when an NDJSON stream stops
//! part-way). Client mistakes get a precise message; an internal failure gets a generic one, and
//! its detail rides in the response extensions to the logging middleware, which logs it once.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::service::metrics::RejectReason;
use crate::service::sample::SampleError;

/// Where in a request a bad sample sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Index in a JSON request (0 for a single sample).
    Sample(usize),
    /// 1-based line of an NDJSON stream.
    Line(usize),
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::Sample(i) => write!(f, "sample {i}"),
            Position::Line(n) => write!(f, "line {n}"),
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON (400).
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The JSON does not have the expected shape: a missing or unknown field, a wrong type (400).
    #[error("{0}")]
    InvalidShape(String),
    /// The body could not be read (400).
    #[error("reading the request body failed: {0}")]
    BodyRead(String),
    /// A body, line or batch over its limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// A content type the route does not take (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A sample that fails validation (422); nothing of its request was learned (except for
    /// the lines of a stream before it, see `Stream`).
    #[error("{at}: `{}` {}", .error.field, .error.detail)]
    InvalidSample {
        /// Where the sample is.
        at: Position,
        /// What is wrong with it.
        error: SampleError,
    },
    /// The body took longer than the request time limit (408).
    #[error("the request body did not arrive within {0} ms")]
    Timeout(u64),
    /// The learn queue has no room for the whole request (429, with `Retry-After`).
    #[error("the learn queue is full ({capacity} samples); retry after {retry_after_seconds} s")]
    QueueFull {
        /// The queue's capacity, in samples.
        capacity: usize,
        /// The `Retry-After` header.
        retry_after_seconds: u64,
    },
    /// Shutdown has begun (503).
    #[error("the service is shutting down")]
    ShuttingDown,
    /// The learner thread is not running (503).
    #[error("the learner is not running")]
    LearnerStopped,
    /// The service is not ready (503).
    #[error("not ready: {0}")]
    NotReady(&'static str),
    /// No such route (404).
    #[error("no such route")]
    NotFound,
    /// The route exists but not for this method (405).
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// A bug or an unexpected failure (500); the detail is logged, never sent.
    #[error("internal error")]
    Internal(String),
    /// An NDJSON stream stopped part-way: what it accepted before `error` stays queued.
    #[error("{error}")]
    Stream {
        /// What stopped the stream.
        error: Box<ApiError>,
        /// Lines queued before it.
        accepted: usize,
        /// Sequence number of the last of them.
        last_seq: Option<u64>,
    },
    /// No credentials, or not a bearer token (401, with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// Credentials that do not grant this route, or a route refused by configuration (403).
    #[error("{0}")]
    Forbidden(String),
    /// The server is handling as many requests as it may (503, with `Retry-After`).
    #[error(
        "the server is busy ({limit} requests in progress); retry after {retry_after_seconds} s"
    )]
    Overloaded {
        /// `http.max_concurrent_requests`.
        limit: usize,
        /// The `Retry-After` header.
        retry_after_seconds: u64,
    },
    /// The write-ahead log cannot be written, so no sample can be acknowledged (500).
    #[error("the write-ahead log cannot be written; samples are not being accepted")]
    StorageFailed,
    /// A route that needs durability while it is off (409).
    #[error("durability is off (`durability.enabled = false`): there are no checkpoints")]
    DurabilityDisabled,
}

/// Every v1 error body, as the OpenAPI document describes it (what [`ApiError`] sends).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"error": {"code": "invalid_features", "message": "sample 0: `features` has 783 values, expected 784"}}))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Machine-readable: `malformed_json`, `invalid_shape`, `body_read_failed`,
    /// `payload_too_large`, `unsupported_media_type`, `invalid_features`, `non_finite_feature`,
    /// `feature_out_of_range`,
    /// `invalid_label`, `unknown_id`, `invalid_id`, `request_timeout`, `queue_full`,
    /// `shutting_down`, `learner_unavailable`, `not_ready`, `not_found`,
    /// `method_not_allowed`, `unauthorized`, `forbidden`, `overloaded`, `storage_failed`,
    /// `durability_disabled`, `internal`.
    #[schema(example = "invalid_features")]
    pub code: String,
    /// For a person: which sample or line, which field, what is wrong.
    pub message: String,
    /// NDJSON streams only: lines queued (and learned) before the failing one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<usize>,
    /// NDJSON streams only: sequence number of the last of them (`null` if none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<Option<u64>>,
}

/// The detail of a 500, handed to the logging middleware through the response extensions.
#[derive(Debug, Clone)]
pub struct InternalDetail(
    /// The error text.
    pub String,
);

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) | Self::InvalidShape(_) | Self::BodyRead(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::InvalidSample { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::ShuttingDown | Self::LearnerStopped | Self::NotReady(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Stream { error, .. } => error.status(),
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::StorageFailed => StatusCode::INTERNAL_SERVER_ERROR,
            Self::DurabilityDisabled => StatusCode::CONFLICT,
        }
    }

    /// The machine-readable code of the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::InvalidShape(_) => "invalid_shape",
            Self::BodyRead(_) => "body_read_failed",
            Self::TooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::InvalidSample { error, .. } => match error.reason {
                RejectReason::Features => "invalid_features",
                RejectReason::NonFinite => "non_finite_feature",
                RejectReason::Label => "invalid_label",
                RejectReason::UnknownId => "unknown_id",
                RejectReason::InvalidId => "invalid_id",
                RejectReason::OutOfRange => "feature_out_of_range",
                _ => "invalid_sample",
            },
            Self::Timeout(_) => "request_timeout",
            Self::QueueFull { .. } => "queue_full",
            Self::ShuttingDown => "shutting_down",
            Self::LearnerStopped => "learner_unavailable",
            Self::NotReady(_) => "not_ready",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Internal(_) => "internal",
            Self::Stream { error, .. } => error.code(),
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::Overloaded { .. } => "overloaded",
            Self::StorageFailed => "storage_failed",
            Self::DurabilityDisabled => "durability_disabled",
        }
    }

    /// Wraps `self` with a stream's progress.
    pub fn in_stream(self, accepted: usize, last_seq: Option<u64>) -> Self {
        Self::Stream {
            error: Box::new(self),
            accepted,
            last_seq,
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::QueueFull {
                retry_after_seconds,
                ..
            } => Some(*retry_after_seconds),
            Self::Overloaded {
                retry_after_seconds,
                ..
            } => Some(*retry_after_seconds),
            Self::Stream { error, .. } => error.retry_after(),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut error = json!({ "code": self.code(), "message": self.to_string() });
        if let Self::Stream {
            accepted, last_seq, ..
        } = &self
        {
            error["accepted"] = json!(accepted);
            error["last_seq"] = json!(last_seq);
        }
        let mut response = (status, Json(json!({ "error": error }))).into_response();
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Self::Unauthorized(_) = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ffd\""),
            );
        }
        if let Self::Internal(detail) = self {
            response.extensions_mut().insert(InternalDetail(detail));
        }
        response
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof => Self::MalformedJson(e.to_string()),
            Category::Data => Self::InvalidShape(e.to_string()),
            Category::Io => Self::BodyRead(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented [`ErrorBody`] must describe what `into_response` really sends.
    #[tokio::test]
    async fn responses_match_the_documented_error_body() {
        let errors = [
            ApiError::NotFound,
            ApiError::QueueFull {
                capacity: 8,
                retry_after_seconds: 1,
            },
            ApiError::TooLarge("big".into()).in_stream(3, Some(7)),
            ApiError::ShuttingDown.in_stream(0, None),
        ];
        for error in errors {
            let code = error.code();
            let response = error.into_response();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .expect("an in-memory body");
            let body: ErrorBody = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{code}: {e}: {}", String::from_utf8_lossy(&bytes)));
            assert_eq!(body.error.code, code);
        }
    }
}
