//! The live status page: `GET /` is one self-contained HTML page (inline CSS and JS, no
//! external assets: the service may run offline) that polls `GET /v1/status` (the model now and
//! its [`History`](crate::service::history::History)) every two seconds and plots rolling and
//! cumulative prequential accuracy, the per-layer goodness gap, throughput and the queue, with
//! the time spent asleep shaded.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use crate::ff::ScheduleMode;
use crate::service::history::HistoryPoint;
use crate::service::http::json::Json;
use crate::service::http::openapi::TAG_STATUS_PAGE;
use crate::service::http::AppState;

/// The page, compiled in.
const STATUS_PAGE: &str = include_str!("status_page.html");

/// The `/v1/status` body: the model now and its recent history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryResponse {
    /// Layer widths from input to top (as in `/v1/model`).
    pub layer_sizes: Vec<usize>,
    /// Features per sample.
    pub inputs: usize,
    /// Number of classes.
    pub classes: usize,
    /// `sleep` or `interleaved`.
    #[schema(value_type = String, example = "sleep")]
    pub schedule: ScheduleMode,
    /// `wake` or `sleep`, now.
    #[schema(example = "wake")]
    pub phase: &'static str,
    /// Whether learning is paused.
    pub paused: bool,
    /// Wake samples learned so far.
    pub samples_learned: u64,
    /// Version of the snapshot `/classify` uses.
    pub model_version: u64,
    /// Sleep phases completed.
    pub sleep_cycles: u64,
    /// Drift detected on the test-then-train errors: the count and the latest detection.
    pub drift: crate::service::drift::DriftSummary,
    /// Samples waiting in the learn queue.
    pub queue_depth: usize,
    /// Samples the learn queue holds.
    pub queue_capacity: usize,
    /// Cluster backend only (`null` in local mode): this node's role, the learning node and
    /// the served snapshot's age, as in `/v1/model`.
    pub cluster: Option<crate::service::cluster::ClusterInfo>,
    /// Milliseconds between two points.
    pub interval_ms: u64,
    /// Most points kept (`status.history_points`).
    pub capacity: usize,
    /// The recorded points, oldest first (at most `capacity`).
    pub points: Vec<HistoryPoint>,
}

/// `GET /`: the status page.
#[utoipa::path(get, path = "/", tag = TAG_STATUS_PAGE, responses(
    (status = 200, description = "A self-contained HTML page that plots `/v1/status`.",
        content_type = "text/html; charset=utf-8", body = String),
))]
pub async fn status_page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        STATUS_PAGE,
    )
}

/// `GET /v1/status`.
#[utoipa::path(get, path = "/v1/status", tag = TAG_STATUS_PAGE, responses(
    (status = 200, description = "The model now and its recent history.", body = HistoryResponse),
))]
pub async fn history(State(state): State<Arc<AppState>>) -> Json<HistoryResponse> {
    let snapshot = state.snapshots.load();
    let net = snapshot.model.config();
    let progress = &state.progress;
    let history = &state.history;
    Json(HistoryResponse {
        layer_sizes: net.widths(),
        inputs: net.inputs,
        classes: net.classes,
        schedule: state.config.train.schedule,
        phase: progress.phase().as_str(),
        paused: state.queue.is_paused(),
        samples_learned: progress.samples_learned(),
        model_version: snapshot.version,
        sleep_cycles: progress.sleep_cycles(),
        drift: progress.drift().summary(),
        queue_depth: state.queue.len(),
        queue_capacity: state.queue.capacity(),
        cluster: state
            .cluster
            .as_ref()
            .map(|c| c.info(progress.learned_seq())),
        interval_ms: history.interval().as_millis() as u64,
        capacity: history.capacity(),
        points: history.points(),
    })
}
