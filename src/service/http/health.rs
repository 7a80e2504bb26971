//! Read-only routes: `/healthz` (the process answers), `/readyz` ([`readiness`]: shutdown has
//! not begun, the learner runs and the write-ahead log can be written), `/v1/model` (shape,
//! schedule, progress and the effective config) and `/metrics` (Prometheus text format).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::ff::ScheduleMode;
use crate::service::config::Config;
use crate::service::http::error::{ApiError, ErrorBody, ErrorDetail, ErrorMessage};
use crate::service::http::json::Json;
use crate::service::http::openapi::TAG_HEALTH;
use crate::service::http::AppState;
use crate::service::recovery::RecoveryReport;

/// `Content-Type` of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /healthz`: 200 while the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = TAG_HEALTH, responses(
    (status = 200, description = "The process serves HTTP.", body = Object, example = json!({"status": "ok"}))
))]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Why the service is not ready. [`readiness`] is the one definition every probe uses
/// (`/readyz`, `/v2/health/ready`, `/v2/models/ffd/ready`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unready {
    /// Shutdown has begun.
    #[error("shutting down")]
    ShuttingDown,
    /// The learner thread is not running.
    #[error("the learner is not running")]
    LearnerStopped,
    /// The write-ahead log failed, so no sample can be acknowledged.
    #[error("the write-ahead log cannot be written")]
    StorageFailed,
    /// Cluster backend: NATS is unreachable, so no sample can be acknowledged (`/classify`
    /// keeps serving the last snapshot).
    #[error(
        "NATS is unreachable: /learn cannot be acknowledged; /classify serves the last snapshot"
    )]
    ClusterUnavailable,
    /// The WAL backlog recovered at start is being replayed: `/classify` serves an older
    /// model than what was acknowledged (unless `durability.ready_while_recovering`).
    #[error("recovering: {backlog} write-ahead log records left to replay")]
    Recovering {
        /// Records left to replay.
        backlog: u64,
    },
}

/// Whether the service can learn and classify now: shutdown has not begun, the learner runs
/// and (with durability) the write-ahead log can be written and the WAL backlog recovered at
/// start is learned (unless `durability.ready_while_recovering`).
pub fn readiness(state: &AppState) -> Result<(), Unready> {
    if state.shutdown.is_triggered() {
        return Err(Unready::ShuttingDown);
    }
    if !state.progress.is_running() {
        return Err(Unready::LearnerStopped);
    }
    if state
        .durability
        .as_ref()
        .is_some_and(|d| d.wal.has_failed())
    {
        return Err(Unready::StorageFailed);
    }
    if state.cluster.as_ref().is_some_and(|c| !c.connected()) {
        return Err(Unready::ClusterUnavailable);
    }
    let backlog = state.queue.backlog();
    if backlog > 0 && !state.config.durability.ready_while_recovering {
        return Err(Unready::Recovering { backlog });
    }
    Ok(())
}

/// `GET /readyz`: 200 when ready to learn and classify, else 503 saying why. Both bodies say
/// whether the WAL backlog recovered at start is still being replayed (`recovering`) and how
/// many records are left (`backlog`).
#[utoipa::path(get, path = "/readyz", tag = TAG_HEALTH, responses(
    (status = 200, description = "Ready to learn and classify.", body = Object, example = json!({"status": "ready", "recovering": false, "backlog": 0})),
    (status = 503, description = "Shutting down, the learner is not running, the write-ahead log cannot be written, or the WAL backlog is being replayed after a restart (`recovering`, unless `durability.ready_while_recovering`).", body = ReadinessError,
        example = json!({"error": {"code": "not_ready", "message": "not ready: recovering: 5120 write-ahead log records left to replay"}, "recovering": true, "backlog": 5120})),
))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> axum::response::Response {
    let backlog = state.queue.backlog();
    match readiness(&state) {
        Ok(()) => Json(json!({ "status": "ready", "recovering": backlog > 0, "backlog": backlog }))
            .into_response(),
        Err(why) => {
            let error = ApiError::NotReady(why);
            let message = error.to_string();
            let body = ReadinessError {
                error: ErrorDetail {
                    code: error.code(),
                    message: message.clone(),
                    accepted: None,
                    last_seq: None,
                },
                recovering: backlog > 0,
                backlog,
            };
            let mut response = (error.code().status(), Json(body)).into_response();
            response.extensions_mut().insert(ErrorMessage(message));
            response
        }
    }
}

/// The `/readyz` 503 body: the `not_ready` error body with the recovery fields of the 200 body
/// beside `error`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadinessError {
    /// Why the service is not ready (code `not_ready`).
    pub error: ErrorDetail,
    /// Whether the WAL backlog recovered at start is still being replayed.
    pub recovering: bool,
    /// WAL records left to replay.
    pub backlog: u64,
}

/// The `/v1/model` body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelInfo<'a> {
    /// Layer widths from input to top: `[input_width, hidden...]` (the input includes the
    /// label slots when they are appended).
    pub layer_sizes: Vec<usize>,
    /// Features per sample.
    pub inputs: usize,
    /// Number of classes.
    pub classes: usize,
    /// The learning schedule, `sleep` or `interleaved` (`train.schedule` of the configuration,
    /// which holds the rest of the schedule's keys).
    #[schema(value_type = String, example = "sleep")]
    pub schedule: ScheduleMode,
    /// `wake` or `sleep`.
    #[schema(example = "wake")]
    pub phase: &'static str,
    /// Whether learning is paused (`/admin/pause`).
    pub paused: bool,
    /// Whether the learner thread runs.
    pub learner_running: bool,
    /// Version of the snapshot `/classify` uses.
    pub model_version: u64,
    /// Wake samples learned into that snapshot.
    pub snapshot_samples_learned: u64,
    /// Temperature `T` of that snapshot's probabilities, `softmax(scores / T)`, fitted to the
    /// test-then-train predictions (docs/algorithm.md §5.1).
    pub calibration_temperature: f32,
    /// Wake samples learned so far (may be ahead of the snapshot).
    pub samples_learned: u64,
    /// Sleep phases completed.
    pub sleep_cycles: u64,
    /// Drift detected on the prequential errors: how often, and the latest detection.
    pub drift: crate::service::drift::DriftSummary,
    /// Samples waiting to be learned: the learn queue plus, after a restart, the WAL backlog
    /// not yet learned.
    pub queue_depth: u64,
    /// Samples the learn queue holds.
    pub queue_capacity: usize,
    /// Sequence number of the last sample accepted (cluster backend: the highest stream
    /// sequence this node has published or read).
    pub last_seq: u64,
    /// Sequence number of the last sample learned (cluster backend: the stream sequence of
    /// its message).
    pub learned_seq: u64,
    /// Features waiting for a delayed label.
    pub pending_entries: usize,
    /// Recovery at start (`null` with durability off): what was found and lost, and whether
    /// the WAL backlog is still being replayed (docs/durability.md#recovery).
    pub recovery: Option<RecoveryStatus>,
    /// Cluster backend only (`null` in local mode): this node's role, the learning node, the
    /// stream sequence learned and the served snapshot's age (docs/cluster.md).
    pub cluster: Option<crate::service::cluster::ClusterInfo>,
    /// The effective configuration (what `ffd serve --print-config` prints, as JSON).
    #[schema(value_type = Object)]
    pub config: &'a Config,
}

/// `/v1/model`'s `recovery`: the live replay progress and the [`RecoveryReport`].
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryStatus {
    /// The WAL backlog recovered at start is still being replayed: `/classify` serves a model
    /// older than what was acknowledged.
    pub recovering: bool,
    /// Records of that backlog left to replay.
    pub backlog: u64,
    /// Records of it replayed so far.
    pub replayed: u64,
    /// What recovery found at start.
    #[serde(flatten)]
    pub report: RecoveryReport,
}

/// `GET /v1/model`.
#[utoipa::path(get, path = "/v1/model", tag = TAG_HEALTH, responses(
    (status = 200, description = "The model's shape, the learner's progress and the effective configuration.", body = ModelInfo),
    (status = 500, description = "An unexpected failure.", body = ErrorBody),
))]
pub async fn model(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let snapshot = state.snapshots.load();
    let net = snapshot.model.config();
    let progress = &state.progress;
    let info = ModelInfo {
        layer_sizes: net.widths(),
        inputs: net.inputs,
        classes: net.classes,
        schedule: state.config.train.schedule,
        phase: progress.phase().as_str(),
        paused: state.queue.is_paused(),
        learner_running: progress.is_running(),
        model_version: snapshot.version,
        snapshot_samples_learned: snapshot.samples_learned,
        calibration_temperature: snapshot.model.calibration().temperature,
        samples_learned: progress.samples_learned(),
        sleep_cycles: progress.sleep_cycles(),
        drift: progress.drift().summary(),
        queue_depth: state.queue.depth(),
        queue_capacity: state.queue.capacity(),
        last_seq: match &state.cluster {
            Some(c) => c.last_seq(),
            None => state.queue.last_seq(),
        },
        learned_seq: match &state.cluster {
            Some(_) => crate::service::cluster::message::stream_seq(progress.learned_seq()),
            None => progress.learned_seq(),
        },
        pending_entries: state.pending.len(),
        recovery: state.durability.as_ref().map(|d| {
            let backlog = state.queue.backlog();
            RecoveryStatus {
                recovering: backlog > 0,
                backlog,
                replayed: d.recovery.backlog_at_start.saturating_sub(backlog),
                report: d.recovery.clone(),
            }
        }),
        cluster: state
            .cluster
            .as_ref()
            .map(|c| c.info(progress.learned_seq())),
        config: &state.config,
    };
    serde_json::to_value(info)
        .map(Json)
        .map_err(|e| ApiError::Internal(format!("serialising /v1/model: {e}")))
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = TAG_HEALTH, responses(
    (status = 200, description = "Every `ffd_*` metric in the Prometheus text format.",
        content_type = "text/plain; version=0.0.4; charset=utf-8", body = String,
        example = "# TYPE ffd_model_version gauge\nffd_model_version 42\n"),
))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        state.metrics.render(),
    )
}
