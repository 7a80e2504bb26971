//! `RequestLimit`: one limit on requests in progress for the whole server, shared by every route
//! it guards through one `Arc<Semaphore>`. (tower's `ConcurrencyLimitLayer` under
//! `Router::layer` is cloned per route and per connection, so it limits nothing globally.) A
//! request that finds no free slot is not queued: it is answered `503` with `Retry-After` at
//! once (load shedding), which keeps latency bounded and memory flat under a flood. The refusal
//! is an [`ApiError`]; the `/v2` router re-renders it in the protocol's shape.
//!
//! `/healthz`, `/readyz` and `/metrics` are not guarded: a probe that fails because the server
//! is busy would make an orchestrator restart a healthy instance (and lose its queue), and the
//! metrics are what an operator needs to see the overload.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::service::http::error::ApiError;
use crate::service::http::AppState;

/// Slots for requests in progress, shared by every clone.
#[derive(Debug, Clone)]
pub struct RequestLimit {
    slots: Arc<Semaphore>,
    limit: usize,
}

impl RequestLimit {
    /// A limit of `limit` requests at once.
    pub fn new(limit: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

/// The middleware: runs the request while holding a slot (an NDJSON stream holds it until it
/// ends), or answers 503 and counts `ffd_http_shed_total` when none is free.
pub async fn shed(
    State((state, limit)): State<(Arc<AppState>, RequestLimit)>,
    req: Request,
    next: Next,
) -> Response {
    let Ok(_slot) = Arc::clone(&limit.slots).try_acquire_owned() else {
        state.metrics.http_shed.inc();
        let e = ApiError::Overloaded {
            limit: limit.limit,
            retry_after_seconds: state.config.http.retry_after_seconds,
        };
        return e.into_response();
    };
    next.run(req).await
}
