//! `POST /learn`: a sample, a batch, or a delayed label as JSON — validated whole, then queued
//! whole or refused whole — or an NDJSON stream, queued line by line as it arrives (a stream
//! cannot be refused whole: a bad line stops it, and the lines before it stay queued).
//! Answers `202 {"accepted": n, "last_seq": s}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::service::cluster::{ClusterState, Staged};
use crate::service::http::error::{ApiError, ErrorBody, Position};
use crate::service::http::extract::{body_kind, read_json, BodyKind, Lines};
use crate::service::http::features;
use crate::service::http::json::Json;
use crate::service::http::AppState;
use crate::service::metrics::RejectReason;
use crate::service::queue::{Accepted, PushError};
use crate::service::sample::{Features, LabelledInput, ValidatedBatch};

/// A `/learn` JSON body: `{features, label}`, `{id, label}` or `{samples: [...]}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"features": [0.0, 0.5, 1.0], "label": 3}))]
pub struct LearnRequest {
    /// One sample's features (`network.inputs` finite numbers); with `label`.
    #[serde(default, deserialize_with = "features::optional")]
    features: Option<Vec<f32>>,
    /// A delayed label: the id an earlier `/classify` kept the features under; with `label`.
    id: Option<String>,
    /// The class, `0..network.classes`.
    #[serde(default, deserialize_with = "optional_integer")]
    label: Option<i64>,
    /// A batch (at most `http.max_batch_samples`): all queued, or none.
    samples: Option<Vec<LearnSample>>,
}

/// One sample of a batch, or one NDJSON line: `{features, label}` or `{id, label}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"features": [0.0, 0.5, 1.0], "label": 3}))]
pub struct LearnSample {
    /// The features (`network.inputs` finite numbers); or `id`.
    #[serde(default, deserialize_with = "features::optional")]
    features: Option<Vec<f32>>,
    /// A delayed label's id; or `features`.
    id: Option<String>,
    /// The class, `0..network.classes`.
    #[serde(deserialize_with = "integer")]
    label: i64,
}

/// The `202` body.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"accepted": 2, "last_seq": 1234}))]
pub struct LearnResponse {
    /// Samples queued by this request.
    pub accepted: usize,
    /// Sequence number of the last of them (`null` if none).
    pub last_seq: Option<u64>,
}

impl LearnResponse {
    fn new(accepted: usize, last_seq: Option<u64>) -> (StatusCode, Json<Self>) {
        (StatusCode::ACCEPTED, Json(Self { accepted, last_seq }))
    }
}

/// `POST /learn`.
#[utoipa::path(
    post,
    path = "/learn",
    tag = crate::service::http::openapi::TAG_V1,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 128 visible ASCII characters. With the cluster backend, retries of a request with the same key within two minutes are acknowledged with the first `last_seq` and learned once (docs/cluster.md); the local backend checks it and learns every request it acknowledges."),
    ),
    request_body(
        description = "A sample, a delayed label, a batch (`application/json`), or an NDJSON \
            stream of `LearnSample` lines (`application/x-ndjson`), queued line by line.",
        content(
            (LearnRequest = "application/json", examples(
                ("sample" = (value = json!({"features": [0.0, 0.5, 1.0], "label": 3}))),
                ("delayed label" = (value = json!({"id": "req-42", "label": 3}))),
                ("batch" = (value = json!({"samples": [{"features": [0.0, 0.5, 1.0], "label": 3}, {"features": [1.0, 0.0, 0.25], "label": 7}]}))),
            )),
            (LearnSample = "application/x-ndjson",
                example = json!({"features": [0.0, 0.5, 1.0], "label": 3})),
        )
    ),
    responses(
        (status = 202, description = "Queued whole.", body = LearnResponse),
        (status = 400, description = "Not JSON, a missing, unknown or mistyped field, or a bad `Idempotency-Key`.", body = ErrorBody),
        (status = 408, description = "The body was too slow.", body = ErrorBody),
        (status = 413, description = "Body, batch or line over its limit.", body = ErrorBody),
        (status = 415, description = "Neither JSON nor NDJSON.", body = ErrorBody),
        (status = 409, description = "A delayed label for an id the service does not hold (never kept, used, evicted or expired): nothing of the request is queued.", body = ErrorBody),
        (status = 422, description = "A bad sample, or an empty batch: nothing of the request is queued (a stream keeps the lines before it; `accepted` says how many).", body = ErrorBody,
            example = json!({"error": {"code": "invalid_label", "message": "sample 1: `label` is 12, expected 0..10"}})),
        (status = 429, description = "The learn queue is full; retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 500, description = "The write-ahead log cannot be written (nothing is acknowledged), or an unexpected failure.", body = ErrorBody),
        (status = 503, description = "Shutting down, the learner is gone, or (cluster backend) NATS did not acknowledge the samples; retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait (cluster_unavailable)."))),
    )
)]
pub async fn learn(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<LearnResponse>), ApiError> {
    match body_kind(&headers, &[BodyKind::Json, BodyKind::Ndjson])? {
        BodyKind::Json => learn_json(&state, &headers, body).await,
        BodyKind::Ndjson => learn_stream(&state, &headers, body).await,
    }
}

async fn learn_json(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<LearnResponse>), ApiError> {
    let limit = state.config.http.max_body_bytes;
    let request: LearnRequest = read_json(headers, body, limit, state.request_timeout()).await?;
    let inputs = request.into_inputs()?;
    let n = inputs.len();
    if n == 0 {
        return Err(ApiError::EmptyBatch(
            "`samples` is empty: a batch needs at least one sample".into(),
        ));
    }
    let max = state.config.http.max_batch_samples;
    if n > max {
        state.metrics.reject(RejectReason::TooLarge, n);
        return Err(ApiError::TooLarge(format!(
            "the batch has {n} samples; at most {max} are allowed"
        )));
    }
    let key = idempotency_key(headers)?;
    let now = Instant::now();
    if let Some(cluster) = &state.cluster {
        let staged = stage(state, cluster, &inputs, now).await?;
        let published = match validate(state, inputs, now, Position::Sample) {
            Ok(batch) => publish(state, batch, key.as_deref(), now).await,
            Err(e) => Err(e),
        };
        cluster.pending.unstage(staged, &state.pending, now).await;
        let a = published?;
        return Ok(LearnResponse::new(a.count, a.last_seq));
    }
    let batch = validate(state, inputs, now, Position::Sample)?;
    match try_queue(state, batch) {
        Ok(a) => {
            durable(state, a.last_seq).await?;
            Ok(LearnResponse::new(a.count, a.last_seq))
        }
        Err((error, batch)) => Err(refuse(state, error, batch, now)),
    }
}

/// Waits until the samples up to `last_seq` are as durable as `durability.mode` promises
/// (at once without durability). The answer to `/learn` comes only after this.
async fn durable(state: &AppState, last_seq: Option<u64>) -> Result<(), ApiError> {
    match (&state.durability, last_seq) {
        (Some(d), Some(seq)) => d
            .wal
            .wait_durable(seq)
            .await
            .map_err(|_| ApiError::StorageFailed),
        _ => Ok(()),
    }
}

/// NDJSON: each line is validated and queued as it arrives. When the queue is full the stream
/// waits for room (up to `http.stream_wait_ms`, then 429), which slows reading and so pushes
/// back on the client through TCP; shutdown stops it with 503; a line that takes longer than
/// `http.request_timeout_ms` to arrive stops it with 408.
async fn learn_stream(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<LearnResponse>), ApiError> {
    let key = idempotency_key(headers)?;
    let result = learn_lines(state, body, key.as_deref()).await;
    // What was queued is acknowledged (in the 202 or in the error body): durable first.
    let last_seq = match &result {
        Ok((_, Json(r))) => r.last_seq,
        Err(ApiError::Stream { last_seq, .. }) => *last_seq,
        Err(_) => None,
    };
    if let Err(e) = durable(state, last_seq).await {
        let accepted = match &result {
            Ok((_, Json(r))) => r.accepted,
            Err(ApiError::Stream { accepted, .. }) => *accepted,
            Err(_) => 0,
        };
        return Err(e.in_stream(accepted, last_seq));
    }
    result
}

async fn learn_lines(
    state: &AppState,
    body: Body,
    key: Option<&str>,
) -> Result<(StatusCode, Json<LearnResponse>), ApiError> {
    let mut lines = Lines::new(body, state.config.http.max_line_bytes);
    let mut shutdown = state.shutdown.clone();
    let wait = Duration::from_millis(state.config.http.stream_wait_ms);
    let line_timeout = state.request_timeout();
    let mut accepted = 0;
    let mut last_seq = None;
    loop {
        let next = tokio::select! {
            biased;
            () = shutdown.triggered() => Err(ApiError::ShuttingDown),
            // A line must arrive whole within the request time limit: a client that trickles
            // bytes cannot hold the stream (and its request slot) open indefinitely.
            line = tokio::time::timeout(line_timeout, lines.next_line()) => line.unwrap_or_else(
                |_| Err(ApiError::Timeout(line_timeout.as_millis() as u64)),
            ),
        };
        let (n, line) = match next {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => return Err(e.in_stream(accepted, last_seq)),
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = serde_json::from_slice::<LearnSample>(&line)
            .map_err(|e| line_error(n, e))
            .and_then(|s| Ok(vec![s.into_input(Position::Line(n))?]));
        let inputs = parsed.map_err(|e| e.in_stream(accepted, last_seq))?;
        let now = Instant::now();
        let a = if let Some(cluster) = &state.cluster {
            let staged = stage(state, cluster, &inputs, now)
                .await
                .map_err(|e| e.in_stream(accepted, last_seq))?;
            // One message per line; a retried stream with the same key skips what was stored.
            let id = key.map(|k| format!("{k}:{n}"));
            let published = match validate(state, inputs, now, |_| Position::Line(n)) {
                Ok(batch) => publish(state, batch, id.as_deref(), now).await,
                Err(e) => Err(e),
            };
            cluster.pending.unstage(staged, &state.pending, now).await;
            published
        } else {
            match validate(state, inputs, now, |_| Position::Line(n)) {
                Ok(batch) => queue_waiting(state, batch, wait, &mut shutdown, now).await,
                Err(e) => Err(e),
            }
        }
        .map_err(|e| e.in_stream(accepted, last_seq))?;
        accepted += a.count;
        last_seq = a.last_seq.or(last_seq);
    }
    Ok(LearnResponse::new(accepted, last_seq))
}

/// Queues one stream line's batch, waiting up to `wait` for room.
async fn queue_waiting(
    state: &AppState,
    mut batch: ValidatedBatch,
    wait: Duration,
    shutdown: &mut crate::service::shutdown::ShutdownNotice,
    now: Instant,
) -> Result<Accepted, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Registered before the attempt, so a pop between the attempt and the wait still wakes.
        let room = state.queue.room_freed();
        tokio::pin!(room);
        room.as_mut().enable();
        match try_queue(state, batch) {
            Ok(a) => return Ok(a),
            Err((ApiError::QueueFull { .. }, back)) => batch = back,
            Err((error, back)) => return Err(refuse(state, error, back, now)),
        }
        tokio::select! {
            biased;
            () = shutdown.triggered() => {
                return Err(refuse(state, ApiError::ShuttingDown, batch, now));
            }
            () = &mut room => {}
            () = tokio::time::sleep_until(deadline) => {
                return Err(refuse(state, queue_full(state), batch, now));
            }
        }
    }
}

/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// The request's `Idempotency-Key` (1 to 128 visible ASCII characters), if it sent one. With
/// the cluster backend it is the stream message's id: a retry with the same key inside the
/// stream's duplicate window is acknowledged with the first sequence and learned once.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = |why: &str| {
        Err(ApiError::InvalidIdempotencyKey(format!(
            "`Idempotency-Key` {why}"
        )))
    };
    if values.next().is_some() {
        return bad("is sent more than once");
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_IDEMPOTENCY_KEY {
        return bad(&format!(
            "must have 1 to {MAX_IDEMPOTENCY_KEY} characters, has {}",
            bytes.len()
        ));
    }
    if !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return bad("must be visible ASCII (no spaces or control characters)");
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// Cluster backend: claims the features of the delayed labels among `inputs` from the shared
/// bucket into this node's map, where validation takes them (`cluster::pending`). 503 if NATS
/// cannot be asked.
async fn stage(
    state: &AppState,
    cluster: &ClusterState,
    inputs: &[LabelledInput],
    now: Instant,
) -> Result<Staged, ApiError> {
    let mut ids = Vec::new();
    for input in inputs {
        if let Features::Pending(id) = &input.features {
            ids.push(id.as_str());
        }
    }
    cluster
        .pending
        .stage(ids, &state.pending, now)
        .await
        .map_err(|e| {
            state
                .metrics
                .reject(RejectReason::Unavailable, inputs.len());
            ApiError::ClusterUnavailable {
                reason: e.to_string(),
                retry_after_seconds: state.config.http.retry_after_seconds,
            }
        })
}

/// Cluster backend: publishes `batch` as one stream message and waits for JetStream's
/// acknowledgement; `last_seq` is the message's stream sequence.
async fn publish(
    state: &AppState,
    batch: ValidatedBatch,
    id: Option<&str>,
    now: Instant,
) -> Result<Accepted, ApiError> {
    let Some(cluster) = &state.cluster else {
        return Err(ApiError::Internal(
            "publish without the cluster backend".into(),
        ));
    };
    if state.shutdown.is_triggered() {
        return Err(refuse(state, ApiError::ShuttingDown, batch, now));
    }
    match cluster.publisher.publish(batch.samples(), id).await {
        Ok(seq) => {
            cluster.saw_seq(seq);
            state.metrics.samples_accepted.inc_by(batch.len() as u64);
            Ok(Accepted {
                count: batch.len(),
                last_seq: Some(seq),
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, "a /learn request was not acknowledged by NATS");
            let error = ApiError::ClusterUnavailable {
                reason: e.to_string(),
                retry_after_seconds: state.config.http.retry_after_seconds,
            };
            Err(refuse(state, error, batch, now))
        }
    }
}

/// Validates `inputs`; on failure counts all of them as rejected and names the bad one.
fn validate(
    state: &AppState,
    inputs: Vec<LabelledInput>,
    now: Instant,
    at: impl Fn(usize) -> Position,
) -> Result<ValidatedBatch, ApiError> {
    let n = inputs.len();
    ValidatedBatch::validate(inputs, state.shape, &state.pending, now).map_err(|error| {
        state.metrics.reject(error.reason, n);
        ApiError::InvalidSample {
            at: at(error.index),
            error: Box::new(error),
        }
    })
}

/// Queues `batch` unless shutdown has begun, the learner is gone or the queue is full; the
/// batch comes back with the error.
fn try_queue(
    state: &AppState,
    batch: ValidatedBatch,
) -> Result<Accepted, (ApiError, ValidatedBatch)> {
    if state.shutdown.is_triggered() {
        return Err((ApiError::ShuttingDown, batch));
    }
    if !state.progress.is_running() {
        return Err((ApiError::LearnerStopped, batch));
    }
    match state.queue.try_push(batch) {
        Ok(a) => {
            state.metrics.samples_accepted.inc_by(a.count as u64);
            Ok(a)
        }
        Err((PushError::Full, batch)) => Err((queue_full(state), batch)),
        Err((PushError::Closed, batch)) => Err((ApiError::ShuttingDown, batch)),
        Err((PushError::Storage, batch)) => Err((ApiError::StorageFailed, batch)),
    }
}

fn queue_full(state: &AppState) -> ApiError {
    ApiError::QueueFull {
        capacity: state.queue.capacity(),
        retry_after_seconds: state.config.http.retry_after_seconds,
    }
}

/// Counts a refused batch and gives its delayed-label features back to the pending map.
fn refuse(state: &AppState, error: ApiError, batch: ValidatedBatch, now: Instant) -> ApiError {
    let reason = match error {
        ApiError::QueueFull { .. } => RejectReason::QueueFull,
        ApiError::LearnerStopped
        | ApiError::StorageFailed
        | ApiError::ClusterUnavailable { .. } => RejectReason::Unavailable,
        _ => RejectReason::ShuttingDown,
    };
    state.metrics.reject(reason, batch.len());
    batch.return_pending(&state.pending, now);
    error
}

fn line_error(n: usize, e: serde_json::Error) -> ApiError {
    match ApiError::from(e) {
        ApiError::MalformedJson(m) => ApiError::MalformedJson(format!("line {n}: {m}")),
        ApiError::InvalidShape(m) => ApiError::InvalidShape(format!("line {n}: {m}")),
        other => other,
    }
}

impl LearnRequest {
    /// The samples this request carries, in order; 400 if its shape is ambiguous.
    fn into_inputs(self) -> Result<Vec<LabelledInput>, ApiError> {
        match self.samples {
            Some(samples) => {
                if self.features.is_some() || self.id.is_some() || self.label.is_some() {
                    return Err(ApiError::InvalidShape(
                        "a batch has only `samples`; put `features` (or `id`) and `label` in each"
                            .into(),
                    ));
                }
                samples
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| s.into_input(Position::Sample(i)))
                    .collect()
            }
            None => {
                let label = self.label.ok_or_else(|| {
                    ApiError::InvalidShape(
                        "missing field `label` (or `samples` for a batch)".into(),
                    )
                })?;
                let features = features_or_id(self.features, self.id, Position::Sample(0))?;
                Ok(vec![LabelledInput { features, label }])
            }
        }
    }
}

impl LearnSample {
    fn into_input(self, at: Position) -> Result<LabelledInput, ApiError> {
        Ok(LabelledInput {
            features: features_or_id(self.features, self.id, at)?,
            label: self.label,
        })
    }
}

fn features_or_id(
    features: Option<Vec<f32>>,
    id: Option<String>,
    at: Position,
) -> Result<Features, ApiError> {
    match (features, id) {
        (Some(f), None) => Ok(Features::Inline(f)),
        (None, Some(id)) => Ok(Features::Pending(id)),
        (Some(_), Some(_)) => Err(ApiError::InvalidShape(format!(
            "{at}: give `features` or `id`, not both"
        ))),
        (None, None) => Err(ApiError::InvalidShape(format!(
            "{at}: missing field `features` (or `id` for a delayed label)"
        ))),
    }
}

/// A label read as JSON Schema reads an integer (the OpenAPI document says `integer`): `3` and
/// `3.0` alike; `3.5`, or a value beyond `i64`, is refused.
fn integer<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(deserializer)?;
    n.as_i64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                .map(|f| f as i64)
        })
        .ok_or_else(|| serde::de::Error::custom(format!("invalid label {n}, expected an integer")))
}

/// [`integer`], or `null` (absent).
fn optional_integer<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "integer")] i64);
    Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(n)| n))
}
