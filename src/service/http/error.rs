//! `ApiError`: every way a request can fail, and its one `IntoResponse`: a status and
//! `{"error": {"code", "message"}}` (plus `accepted` and `last_seq` when an NDJSON stream stops
//! part-way). Every error code is one row of [`error_codes!`]: its code string, HTTP status and
//! description; the status, the body's `code`, the OpenAPI `ErrorCode` enum and the table in
//! `docs/http-api.md` are all read from it. Client mistakes get a precise message; an internal
//! failure gets a generic one, and its detail rides in the response extensions to the logging
//! middleware, which logs it once.

use std::borrow::Cow;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::service::http::health::Unready;
use crate::service::http::json::Json;
use crate::service::metrics::RejectReason;
use crate::service::sample::SampleError;

/// Declares [`ErrorCode`] from one row per code: variant, code string, HTTP status (an
/// `http::StatusCode` constant) and what it means, for the documentation.
macro_rules! error_codes {
    ($($variant:ident => $code:literal, $status:ident, $description:literal;)*) => {
        /// The machine-readable code of an error body. One row of the table per code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $(#[doc = $description] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code string of the error body.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $code,)* }
            }

            /// The HTTP status an error with this code is sent with.
            pub fn status(self) -> StatusCode {
                match self { $(Self::$variant => StatusCode::$status,)* }
            }

            /// When a client gets this code, for the documentation.
            pub fn description(self) -> &'static str {
                match self { $(Self::$variant => $description,)* }
            }
        }
    };
}

error_codes! {
    MalformedJson => "malformed_json", BAD_REQUEST,
        "The body (or an NDJSON line) is not JSON.";
    InvalidShape => "invalid_shape", BAD_REQUEST,
        "The JSON does not have the expected shape: a missing, unknown or mistyped field.";
    BodyReadFailed => "body_read_failed", BAD_REQUEST,
        "The body could not be read (the connection broke, or the body is malformed).";
    InvalidInferenceRequest => "invalid_inference_request", BAD_REQUEST,
        "v2 only: an inference request with a wrong input name, datatype, shape, data or output.";
    InvalidIdempotencyKey => "invalid_idempotency_key", BAD_REQUEST,
        "An `Idempotency-Key` header that is empty, longer than 128 characters, or not visible ASCII.";
    DuplicateAuthorization => "duplicate_authorization", BAD_REQUEST,
        "More than one `Authorization` header: which one holds the credentials is ambiguous.";
    Unauthorized => "unauthorized", UNAUTHORIZED,
        "No `Authorization: Bearer <token>` header, and the route needs one (`WWW-Authenticate: Bearer` is set).";
    Forbidden => "forbidden", FORBIDDEN,
        "The token does not grant the route, or `/admin/*` while no learn token is set.";
    NotFound => "not_found", NOT_FOUND,
        "No such route.";
    UnknownModel => "unknown_model", NOT_FOUND,
        "v2 only: a model other than `ffd`.";
    MethodNotAllowed => "method_not_allowed", METHOD_NOT_ALLOWED,
        "The route exists, but not for this method.";
    RequestTimeout => "request_timeout", REQUEST_TIMEOUT,
        "The body (or an NDJSON line) did not arrive within `http.request_timeout_ms`.";
    DurabilityDisabled => "durability_disabled", CONFLICT,
        "`/admin/checkpoint` while `durability.enabled = false`.";
    UnknownId => "unknown_id", CONFLICT,
        "A delayed label for an id that `/classify` did not keep, or that expired (the request is valid, the service's state does not hold the id).";
    PayloadTooLarge => "payload_too_large", PAYLOAD_TOO_LARGE,
        "A body, batch or NDJSON line over `http.max_body_bytes`, `http.max_batch_samples` or `http.max_line_bytes`.";
    UnsupportedMediaType => "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE,
        "A `Content-Type` the route does not take.";
    InvalidFeatures => "invalid_features", UNPROCESSABLE_ENTITY,
        "A sample with the wrong number of features.";
    NonFiniteFeature => "non_finite_feature", UNPROCESSABLE_ENTITY,
        "A feature that is not a finite 32-bit number (e.g. `1e39`).";
    FeatureOutOfRange => "feature_out_of_range", UNPROCESSABLE_ENTITY,
        "A finite feature beyond ±1e15.";
    InvalidLabel => "invalid_label", UNPROCESSABLE_ENTITY,
        "A label outside `0..network.classes`.";
    InvalidId => "invalid_id", UNPROCESSABLE_ENTITY,
        "An id that is empty or longer than 256 characters.";
    EmptyBatch => "empty_batch", UNPROCESSABLE_ENTITY,
        "A batch without samples (`{\"samples\": []}`): nothing to learn or classify.";
    InvalidSample => "invalid_sample", UNPROCESSABLE_ENTITY,
        "A sample refused for another reason.";
    QueueFull => "queue_full", TOO_MANY_REQUESTS,
        "The learn queue has no room for the whole request; retry after `Retry-After` seconds.";
    Internal => "internal", INTERNAL_SERVER_ERROR,
        "An unexpected failure; the detail is in the service's log, not in the answer.";
    StorageFailed => "storage_failed", INTERNAL_SERVER_ERROR,
        "The write-ahead log cannot be written, so no sample can be acknowledged.";
    ShuttingDown => "shutting_down", SERVICE_UNAVAILABLE,
        "Shutdown has begun.";
    LearnerUnavailable => "learner_unavailable", SERVICE_UNAVAILABLE,
        "The learner thread is not running.";
    NotReady => "not_ready", SERVICE_UNAVAILABLE,
        "`/readyz`: the service cannot learn and classify now (the message says why).";
    Overloaded => "overloaded", SERVICE_UNAVAILABLE,
        "`http.max_concurrent_requests` requests are in progress; retry after `Retry-After` seconds.";
    ClusterUnavailable => "cluster_unavailable", SERVICE_UNAVAILABLE,
        "Cluster backend: NATS JetStream did not acknowledge the samples (unreachable, or no answer within `cluster.nats_timeout_ms`), so nothing is acknowledged; retry after `Retry-After` seconds.";
}

impl ErrorCode {
    /// The codes sent with `status`, in table order.
    pub fn with_status(status: StatusCode) -> impl Iterator<Item = ErrorCode> {
        Self::ALL
            .iter()
            .copied()
            .filter(move |c| c.status() == status)
    }

    /// The code of a refused sample.
    fn of_sample(reason: RejectReason) -> Self {
        match reason {
            RejectReason::Features => Self::InvalidFeatures,
            RejectReason::NonFinite => Self::NonFiniteFeature,
            RejectReason::OutOfRange => Self::FeatureOutOfRange,
            RejectReason::Label => Self::InvalidLabel,
            RejectReason::UnknownId => Self::UnknownId,
            RejectReason::InvalidId => Self::InvalidId,
            _ => Self::InvalidSample,
        }
    }

    /// The error table as Markdown, as `docs/http-api.md` carries it between
    /// `<!-- error-table:start -->` and `<!-- error-table:end -->`.
    pub fn markdown_table() -> String {
        let mut table = String::from("| Code | Status | When |\n| --- | --- | --- |\n");
        for code in Self::ALL {
            let status = code.status();
            table.push_str(&format!(
                "| `{}` | {} {} | {} |\n",
                code.as_str(),
                status.as_u16(),
                status.canonical_reason().unwrap_or(""),
                code.description()
            ));
        }
        table
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        Self::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {text:?}")))
    }
}

impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .description(Some(
                "Machine-readable error code; the table in docs/http-api.md says when each is sent.",
            ))
            .enum_values(Some(Self::ALL.iter().map(|c| c.as_str())))
            .examples([json!("invalid_features")])
            .into()
    }
}

impl ToSchema for ErrorCode {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorCode")
    }
}

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
    /// The body is not JSON.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The JSON does not have the expected shape: a missing or unknown field, a wrong type.
    #[error("{0}")]
    InvalidShape(String),
    /// The body could not be read.
    #[error("reading the request body failed: {0}")]
    BodyRead(String),
    /// A v2 inference request that does not fit the model's tensors.
    #[error("{0}")]
    InvalidInference(String),
    /// More than one `Authorization` header.
    #[error("the request has more than one Authorization header; send exactly one")]
    DuplicateAuthorization,
    /// A batch without samples.
    #[error("{0}")]
    EmptyBatch(String),
    /// A v2 model name other than `ffd`.
    #[error("{0}")]
    UnknownModel(String),
    /// A body, line or batch over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// A content type the route does not take.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A sample that fails validation; nothing of its request was learned (except for the
    /// lines of a stream before it, see `Stream`).
    #[error("{at}: {error}")]
    InvalidSample {
        /// Where the sample is.
        at: Position,
        /// What is wrong with it (boxed: it is the largest variant, and every `Result` pays
        /// for it).
        error: Box<SampleError>,
    },
    /// The body took longer than the request time limit.
    #[error("the request body did not arrive within {0} ms")]
    Timeout(u64),
    /// The learn queue has no room for the whole request (with `Retry-After`).
    #[error("the learn queue is full ({capacity} samples); retry after {retry_after_seconds} s")]
    QueueFull {
        /// The queue's capacity, in samples.
        capacity: usize,
        /// The `Retry-After` header.
        retry_after_seconds: u64,
    },
    /// Shutdown has begun.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// The learner thread is not running.
    #[error("the learner is not running")]
    LearnerStopped,
    /// The service is not ready.
    #[error("not ready: {0}")]
    NotReady(Unready),
    /// No such route.
    #[error("no such route")]
    NotFound,
    /// The route exists but not for this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// A bug or an unexpected failure; the detail is logged, never sent.
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
    /// No credentials, or not a bearer token (with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// Credentials that do not grant this route, or a route refused by configuration.
    #[error("{0}")]
    Forbidden(String),
    /// The server is handling as many requests as it may (with `Retry-After`).
    #[error(
        "the server is busy ({limit} requests in progress); retry after {retry_after_seconds} s"
    )]
    Overloaded {
        /// `http.max_concurrent_requests`.
        limit: usize,
        /// The `Retry-After` header.
        retry_after_seconds: u64,
    },
    /// The write-ahead log cannot be written, so no sample can be acknowledged.
    #[error("the write-ahead log cannot be written; samples are not being accepted")]
    StorageFailed,
    /// The cluster backend could not get the samples acknowledged (with `Retry-After`).
    #[error("the cluster cannot take samples now ({reason}); retry after {retry_after_seconds} s")]
    ClusterUnavailable {
        /// Why.
        reason: String,
        /// The `Retry-After` header.
        retry_after_seconds: u64,
    },
    /// A bad `Idempotency-Key` header.
    #[error("{0}")]
    InvalidIdempotencyKey(String),
    /// A route that needs durability while it is off.
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
    /// Machine-readable; one of the error table's codes.
    pub code: ErrorCode,
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

/// The message of an error response, in its extensions: a router that answers errors in
/// another shape (the v2 routes) rebuilds the body from it, keeping status and headers.
#[derive(Debug, Clone)]
pub struct ErrorMessage(
    /// What the v1 body's `message` says.
    pub String,
);

impl ApiError {
    /// The machine-readable code; the status comes with it.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::MalformedJson(_) => ErrorCode::MalformedJson,
            Self::InvalidShape(_) => ErrorCode::InvalidShape,
            Self::BodyRead(_) => ErrorCode::BodyReadFailed,
            Self::InvalidInference(_) => ErrorCode::InvalidInferenceRequest,
            Self::UnknownModel(_) => ErrorCode::UnknownModel,
            Self::DuplicateAuthorization => ErrorCode::DuplicateAuthorization,
            Self::EmptyBatch(_) => ErrorCode::EmptyBatch,
            Self::TooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            Self::InvalidSample { error, .. } => ErrorCode::of_sample(error.reason),
            Self::Timeout(_) => ErrorCode::RequestTimeout,
            Self::QueueFull { .. } => ErrorCode::QueueFull,
            Self::ShuttingDown => ErrorCode::ShuttingDown,
            Self::LearnerStopped => ErrorCode::LearnerUnavailable,
            Self::NotReady(_) => ErrorCode::NotReady,
            Self::NotFound => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::Internal(_) => ErrorCode::Internal,
            Self::Stream { error, .. } => error.code(),
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::Overloaded { .. } => ErrorCode::Overloaded,
            Self::StorageFailed => ErrorCode::StorageFailed,
            Self::DurabilityDisabled => ErrorCode::DurabilityDisabled,
            Self::ClusterUnavailable { .. } => ErrorCode::ClusterUnavailable,
            Self::InvalidIdempotencyKey(_) => ErrorCode::InvalidIdempotencyKey,
        }
    }

    /// The HTTP status (the code's row of the table).
    pub fn status(&self) -> StatusCode {
        self.code().status()
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
            Self::ClusterUnavailable {
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
        let code = self.code();
        let message = self.to_string();
        let mut error = json!({ "code": code.as_str(), "message": message });
        if let Self::Stream {
            accepted, last_seq, ..
        } = &self
        {
            error["accepted"] = json!(accepted);
            error["last_seq"] = json!(last_seq);
        }
        let mut response = (code.status(), Json(json!({ "error": error }))).into_response();
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
        response.extensions_mut().insert(ErrorMessage(message));
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
            let (code, status) = (error.code(), error.status());
            let response = error.into_response();
            assert_eq!(response.status(), status);
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .expect("an in-memory body");
            let body: ErrorBody = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{code:?}: {e}: {}", String::from_utf8_lossy(&bytes)));
            assert_eq!(body.error.code, code);
        }
    }

    #[test]
    fn code_strings_are_unique_and_read_back() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{} twice", code.as_str());
            let back: ErrorCode =
                serde_json::from_value(json!(code.as_str())).expect("a known code");
            assert_eq!(back, *code);
        }
    }

    /// `docs/http-api.md` carries exactly the table generated from [`error_codes!`].
    #[test]
    fn the_documented_error_table_is_the_generated_one() {
        const START: &str = "<!-- error-table:start -->\n";
        const END: &str = "<!-- error-table:end -->";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/http-api.md");
        let doc = std::fs::read_to_string(&path).expect("docs/http-api.md is readable");
        let start = doc
            .find(START)
            .expect("docs/http-api.md has the start marker")
            + START.len();
        let end = doc[start..]
            .find(END)
            .expect("docs/http-api.md has the end marker")
            + start;
        let table = ErrorCode::markdown_table();
        // `FFD_UPDATE_DOCS=1 cargo test --lib error_table` writes the generated table in.
        if std::env::var_os("FFD_UPDATE_DOCS").is_some_and(|v| v == "1") {
            let updated = format!("{}{table}{}", &doc[..start], &doc[end..]);
            std::fs::write(&path, updated).expect("docs/http-api.md is writable");
            return;
        }
        assert_eq!(
            &doc[start..end],
            table,
            "docs/http-api.md's error table is stale: run FFD_UPDATE_DOCS=1 cargo test --lib error_table"
        );
    }
}
