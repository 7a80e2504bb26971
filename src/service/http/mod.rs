//! The HTTP layer: [`router`] maps routes to thin handlers (extract → validate → one call → map
//! the result) over the shared [`AppState`]. Only this module knows HTTP; handlers never touch
//! the model except through the published snapshot.
//!
//! `RouteGroups` is the one route table: every route is registered there through `routes!`,
//! which takes its OpenAPI operation from the handler's `#[utoipa::path]`, so the router and
//! `GET /openapi.json` cannot disagree (a test compares them on a live server). Every JSON
//! answer goes out through [`json::Json`]; every failure is an [`error::ApiError`].

pub mod admin;
pub mod classify;
pub mod connection;
pub mod error;
pub mod extract;
pub mod features;
pub mod guard;
pub mod health;
pub mod json;
pub mod learn;
pub mod listener;
pub mod openapi;
pub mod request_limit;
pub mod status_page;
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
use crate::service::learner::LearnerProgress;
use crate::service::metrics::Metrics;
use crate::service::pending::PendingLabels;
use crate::service::queue::LearnQueue;
use crate::service::sample::SampleShape;
use crate::service::shutdown::ShutdownNotice;
use crate::service::snapshot::Snapshots;

use self::error::{ApiError, InternalDetail};
use self::guard::Guard;

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
    /// The learner's progress counters.
    pub progress: Arc<LearnerProgress>,
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
    /// The WAL and checkpoint reports; `None` when durability is off (and with the cluster
    /// backend, whose checkpoints go to NATS).
    pub durability: Option<DurabilityState>,
    /// The cluster backend: `/learn` publishes through it; `None` in local mode.
    pub cluster: Option<Arc<crate::service::cluster::ClusterState>>,
}

/// What handlers need of the durability machinery.
#[derive(Debug)]
pub struct DurabilityState {
    /// `/learn` waits on it before answering.
    pub wal: Arc<crate::service::wal_writer::WalWriter>,
    /// `/admin/checkpoint` waits for its request here.
    pub checkpoints: tokio::sync::watch::Receiver<crate::service::checkpointer::CheckpointReport>,
    /// What recovery found at start (`/v1/model`'s `recovery`).
    pub recovery: crate::service::recovery::RecoveryReport,
}

impl AppState {
    /// Time limit of reading a JSON body.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.http.request_timeout_ms)
    }
}

/// What a route group's requests must pass before the handler: the token its [`Guard`]
/// requires and, for the routes that do work, the global request limit.
#[derive(Debug, Clone, Copy)]
struct Access {
    guard: Guard,
    limited: bool,
}

impl Access {
    const fn new(guard: Guard, limited: bool) -> Self {
        Self { guard, limited }
    }
}

/// The middleware [`RouteGroups::assemble`] puts around each group: `None` builds the routes
/// bare, for the OpenAPI document alone.
struct Layers {
    state: Arc<AppState>,
    limit: request_limit::RequestLimit,
}

/// Every route and its OpenAPI operation, in groups by what a request needs to pass
/// ([`Access`]). This is the one route table: the router and the OpenAPI document are both
/// built from it by [`RouteGroups::assemble`]. Register routes here and only through
/// `routes!`: a route added with `.route(...)` would be served but missing from
/// `/openapi.json`, and the route-coverage test fails.
struct RouteGroups {
    /// `/learn`: the learn token.
    learn: OpenApiRouter<Arc<AppState>>,
    /// `/admin/*`: the learn token, always.
    admin: OpenApiRouter<Arc<AppState>>,
    /// Classification and model metadata: the read token, when one is set.
    read: OpenApiRouter<Arc<AppState>>,
    /// What a monitoring system or a person watching reads: `/metrics`, the status page and its
    /// data. Open unless `auth.metrics_open = false`.
    observe: OpenApiRouter<Arc<AppState>>,
    /// Liveness and readiness probes. Open unless `auth.health_open = false`.
    health: OpenApiRouter<Arc<AppState>>,
    /// The API's own description: always open, it holds nothing about the model.
    open: OpenApiRouter<Arc<AppState>>,
    /// The Open Inference Protocol's metadata and inference routes, relative to `/v2`: as
    /// `read`.
    v2_read: OpenApiRouter<Arc<AppState>>,
    /// The Open Inference Protocol's probes, relative to `/v2`: as `health`.
    v2_health: OpenApiRouter<Arc<AppState>>,
}

impl RouteGroups {
    const LEARN: Access = Access::new(Guard::Learn, true);
    const ADMIN: Access = Access::new(Guard::Admin, true);
    const READ: Access = Access::new(Guard::Read, true);
    const OBSERVE: Access = Access::new(Guard::Metrics, false);
    const HEALTH: Access = Access::new(Guard::Health, false);

    fn new() -> Self {
        Self {
            learn: OpenApiRouter::new().routes(routes!(learn::learn)),
            admin: OpenApiRouter::new()
                .routes(routes!(admin::sleep))
                .routes(routes!(admin::pause))
                .routes(routes!(admin::resume))
                .routes(routes!(admin::checkpoint)),
            read: OpenApiRouter::new()
                .routes(routes!(classify::classify))
                .routes(routes!(health::model)),
            observe: OpenApiRouter::new()
                .routes(routes!(health::metrics))
                .routes(routes!(status_page::status_page))
                .routes(routes!(status_page::history)),
            health: OpenApiRouter::new()
                .routes(routes!(health::healthz))
                .routes(routes!(health::readyz)),
            open: OpenApiRouter::new().routes(routes!(openapi::openapi_json)),
            v2_read: OpenApiRouter::new()
                .routes(routes!(v2::metadata::server_metadata))
                .routes(routes!(v2::metadata::model_metadata))
                .routes(routes!(v2::health::model_ready))
                .routes(routes!(v2::infer::model_infer)),
            v2_health: OpenApiRouter::new()
                .routes(routes!(v2::health::server_live))
                .routes(routes!(v2::health::server_ready)),
        }
    }

    /// Every group behind its [`Access`] (documented, and with `layers` enforced), the v2
    /// groups nested under `/v2` behind the protocol's error shape, and the error codes in the
    /// document.
    fn assemble(self, layers: Option<&Layers>) -> OpenApiRouter<Arc<AppState>> {
        let guarded = |mut routes: OpenApiRouter<Arc<AppState>>, access: Access, v2: bool| {
            openapi::document_access(routes.get_openapi_mut(), access.guard, access.limited, v2);
            let Some(layers) = layers else {
                return routes;
            };
            if access.limited {
                routes = routes.route_layer(middleware::from_fn_with_state(
                    (Arc::clone(&layers.state), layers.limit.clone()),
                    request_limit::shed,
                ));
            }
            // Added last, so it runs first: unauthenticated clients cannot use up the slots.
            routes.route_layer(middleware::from_fn_with_state(
                (Arc::clone(&layers.state), access.guard),
                guard::require,
            ))
        };
        let mut v2 = OpenApiRouter::new()
            .merge(guarded(self.v2_read, Self::READ, true))
            .merge(guarded(self.v2_health, Self::HEALTH, true));
        if layers.is_some() {
            v2 = v2
                .fallback(|| async { ApiError::NotFound })
                .layer(middleware::map_response(v2::error::protocol_shape));
        }
        let mut routes = OpenApiRouter::with_openapi(openapi::document_base())
            .merge(guarded(self.learn, Self::LEARN, false))
            .merge(guarded(self.admin, Self::ADMIN, false))
            .merge(guarded(self.read, Self::READ, false))
            .merge(guarded(self.observe, Self::OBSERVE, false))
            .merge(guarded(self.health, Self::HEALTH, false))
            .merge(self.open)
            .nest("/v2", v2);
        openapi::document_error_codes(routes.get_openapi_mut());
        routes
    }
}

/// Every route, without its middleware: the source of the OpenAPI document.
pub fn api() -> OpenApiRouter<Arc<AppState>> {
    RouteGroups::new().assemble(None)
}

/// The OpenAPI document of every route [`router`] serves with `config`: `/openapi.json`.
pub fn openapi(config: &Config) -> serde_json::Value {
    openapi::exact_document(&api().into_openapi(), openapi::Limits::of(config))
}

/// The service's routes. Layers, outermost first: tracing (a span per request), then metrics
/// and error logging per matched route, then the OpenAPI document for `/openapi.json`, then
/// per route group the token check ([`guard`]) and, except for probes, `/metrics` and the
/// status page, the global request limit ([`request_limit`]), then the handler. The `/v2`
/// routes are a nested router whose errors take the protocol's shape.
pub fn router(state: Arc<AppState>) -> Router {
    let layers = Layers {
        limit: request_limit::RequestLimit::new(state.config.http.max_concurrent_requests),
        state: Arc::clone(&state),
    };
    let (routes, document) = RouteGroups::new().assemble(Some(&layers)).split_for_parts();
    let document = openapi::exact_document(&document, openapi::Limits::of(&state.config));
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
