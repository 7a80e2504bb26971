//! The HTTP layer: [`router`] maps routes to thin handlers (extract → validate → one call → map
//! the result) over the shared [`AppState`]. Only this module knows HTTP; handlers never touch
//! the model except through the published snapshot.
//!
//! [`api`] is the one route table: every route is registered there through `routes!`, which
//! takes its OpenAPI operation from the handler's `#[utoipa::path]`, so the router and
//! `GET /openapi.json` cannot disagree (a test compares them on a live server).

pub mod admin;
pub mod auth;
pub mod classify;
pub mod connection;
pub mod error;
pub mod extract;
pub mod health;
pub mod learn;
pub mod listener;
pub mod openapi;
pub mod request_limit;
pub mod status;
pub mod v2;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::{Extension, Router};
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ff::Classifier;
use crate::service::auth::AccessTokens;
use crate::service::config::Config;
use crate::service::history::History;
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
    /// What the status page plots.
    pub history: Arc<History>,
    /// The tokens requests are checked against.
    pub access: AccessTokens,
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

/// Every route and its OpenAPI operation, in groups by what a request needs to pass: the token
/// its [`auth::Guard`] requires and, for the routes that do work, the global request limit.
/// Register routes here and only through `routes!`: a route added with `.route(...)` would be
/// served but missing from `/openapi.json`, and the route-coverage test fails.
struct RouteGroups {
    /// `/learn`: the learn token.
    learn: OpenApiRouter<Arc<AppState>>,
    /// `/admin/*`: the learn token, always.
    admin: OpenApiRouter<Arc<AppState>>,
    /// Classification and model metadata (v1 and v2): the read token, when one is set.
    read: OpenApiRouter<Arc<AppState>>,
    /// What a monitoring system or a person watching reads: `/metrics`, the status page and its
    /// data. Open unless `auth.metrics_open = false`.
    observe: OpenApiRouter<Arc<AppState>>,
    /// Liveness and readiness probes (v1 and v2). Open unless `auth.health_open = false`.
    health: OpenApiRouter<Arc<AppState>>,
    /// The API's own description: always open, it holds nothing about the model.
    open: OpenApiRouter<Arc<AppState>>,
}

impl RouteGroups {
    fn new() -> Self {
        use self::auth::Guard;
        Self {
            learn: documented(
                OpenApiRouter::new().routes(routes!(learn::learn)),
                Guard::Learn,
                true,
            ),
            admin: documented(
                OpenApiRouter::new()
                    .routes(routes!(admin::sleep))
                    .routes(routes!(admin::pause))
                    .routes(routes!(admin::resume))
                    .routes(routes!(admin::checkpoint)),
                Guard::Admin,
                true,
            ),
            read: documented(
                OpenApiRouter::new()
                    .routes(routes!(classify::classify))
                    .routes(routes!(health::model))
                    .routes(routes!(v2::server_metadata))
                    .routes(routes!(v2::model_metadata))
                    .routes(routes!(v2::model_ready))
                    .routes(routes!(v2::model_infer)),
                Guard::Read,
                true,
            ),
            observe: documented(
                OpenApiRouter::new()
                    .routes(routes!(health::metrics))
                    .routes(routes!(status::status_page))
                    .routes(routes!(status::status_json)),
                Guard::Metrics,
                false,
            ),
            health: documented(
                OpenApiRouter::new()
                    .routes(routes!(health::healthz))
                    .routes(routes!(health::readyz))
                    .routes(routes!(v2::server_live))
                    .routes(routes!(v2::server_ready)),
                Guard::Health,
                false,
            ),
            open: OpenApiRouter::new().routes(routes!(openapi::openapi_json)),
        }
    }
}

/// `routes` with what `guard` (and, if `limited`, the request limit) add to their answers in
/// the OpenAPI document.
fn documented(
    mut routes: OpenApiRouter<Arc<AppState>>,
    guard: auth::Guard,
    limited: bool,
) -> OpenApiRouter<Arc<AppState>> {
    openapi::document_access(routes.get_openapi_mut(), guard, limited);
    routes
}

/// Every route, without its middleware: the source of the OpenAPI document.
pub fn api() -> OpenApiRouter<Arc<AppState>> {
    let g = RouteGroups::new();
    OpenApiRouter::with_openapi(openapi::document_base())
        .merge(g.learn)
        .merge(g.admin)
        .merge(g.read)
        .merge(g.observe)
        .merge(g.health)
        .merge(g.open)
}

/// The OpenAPI document of every route [`router`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

/// The service's routes. Layers, outermost first: tracing (a span per request), then metrics
/// and error logging per matched route, then the OpenAPI document for `/openapi.json`, then per
/// route group the token check ([`auth`]) and, except for probes, `/metrics` and the status
/// page, the global request limit ([`request_limit`]), then the handler. The token check runs
/// before the limit, so unauthenticated clients cannot use up the slots.
pub fn router(state: Arc<AppState>) -> Router {
    use self::auth::Guard;
    let limit = request_limit::RequestLimit::new(state.config.http.max_concurrent_requests);
    let guarded = |routes: OpenApiRouter<Arc<AppState>>, guard: Guard| {
        routes.route_layer(middleware::from_fn_with_state(
            (Arc::clone(&state), guard),
            auth::require,
        ))
    };
    let g = RouteGroups::new();
    let limited = OpenApiRouter::new()
        .merge(guarded(g.learn, Guard::Learn))
        .merge(guarded(g.admin, Guard::Admin))
        .merge(guarded(g.read, Guard::Read))
        .route_layer(middleware::from_fn_with_state(
            (Arc::clone(&state), limit),
            request_limit::shed,
        ));
    let (routes, document) = OpenApiRouter::with_openapi(openapi::document_base())
        .merge(limited)
        .merge(guarded(g.observe, Guard::Metrics))
        .merge(guarded(g.health, Guard::Health))
        .merge(g.open)
        .split_for_parts();
    routes
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(Extension(openapi::OpenApiJson::new(&document)))
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
