//! The HTTP layer: [`router`] maps routes to thin handlers (extract → validate → one call → map
//! the result) over the shared [`AppState`]. Only this module knows HTTP; handlers never touch
//! the model except through the published snapshot.

pub mod admin;
pub mod classify;
pub mod error;
pub mod extract;
pub mod health;
pub mod learn;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::ff::Classifier;
use crate::service::config::Config;
use crate::service::learner::LearnerStatus;
use crate::service::metrics::Metrics;
use crate::service::pending::PendingLabels;
use crate::service::queue::LearnQueue;
use crate::service::sample::SampleShape;
use crate::service::shutdown::ShutdownNotice;
use crate::service::snapshot::Snapshots;

use self::error::{ApiError, InternalDetail};

/// Route label of requests that matched no route (keeps `route` low-cardinality).
const UNMATCHED_ROUTE: &str = "unmatched";

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The effective configuration (shown by `/v1/model`).
    pub config: Config,
    /// Where validated samples go.
    pub queue: Arc<LearnQueue>,
    /// The model `/classify` uses.
    pub snapshots: Arc<Snapshots>,
    /// Features waiting for delayed labels.
    pub pending: Arc<PendingLabels>,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// The learner's progress.
    pub status: Arc<LearnerStatus>,
    /// Whether shutdown has begun.
    pub shutdown: ShutdownNotice,
    /// Shape every sample must have.
    pub shape: SampleShape,
    /// How `/classify` classifies.
    pub classifier: Classifier,
    /// The WAL and checkpoint reports; `None` when durability is off.
    pub durability: Option<DurabilityState>,
}

/// What handlers need of the durability machinery.
#[derive(Debug)]
pub struct DurabilityState {
    /// `/learn` waits on it before answering.
    pub journal: Arc<crate::service::journal::Journal>,
    /// `/admin/checkpoint` waits for its request here.
    pub checkpoints: tokio::sync::watch::Receiver<crate::service::checkpointer::CheckpointReport>,
}

impl AppState {
    /// Time limit of reading a JSON body.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.http.request_timeout_ms)
    }
}

/// The service's routes. Layers, outermost first: tracing (a span per request), then metrics
/// and error logging per matched route, then the handler.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/learn", post(learn::learn))
        .route("/classify", post(classify::classify))
        .route("/metrics", get(health::metrics))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/model", get(health::model))
        .route("/admin/sleep", post(admin::sleep))
        .route("/admin/pause", post(admin::pause))
        .route("/admin/resume", post(admin::resume))
        .route("/admin/checkpoint", post(admin::checkpoint))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            observe_request,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Counts and times every request by route and status, and logs the detail of a 500 once.
async fn observe_request(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched
        .as_ref()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    let started = Instant::now();
    let response = next.run(req).await;
    let m = &state.metrics;
    m.http_requests
        .with_label_values(&[route, response.status().as_str()])
        .inc();
    m.http_duration
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    if let Some(InternalDetail(detail)) = response.extensions().get::<InternalDetail>() {
        tracing::error!(route, error = %detail, "request failed");
    }
    response
}
