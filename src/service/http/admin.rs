//! Operator routes: they send control messages to the learner and never touch the model.
//! `POST /admin/sleep` starts a sleep phase now; `/admin/pause` and `/admin/resume` stop and
//! restart learning (the queue keeps accepting until full, then `/learn` answers 429).
//! They always need the learn token (`http::auth`, `Guard::Admin`): without one set, they are
//! refused.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::service::http::openapi::TAG_ADMIN;
use crate::service::http::AppState;

/// `POST /admin/sleep`: 202 — the learner sleeps once it finishes the samples in hand.
#[utoipa::path(post, path = "/admin/sleep", tag = TAG_ADMIN, responses(
    (status = 202, description = "The learner sleeps once it finishes the samples in hand.", body = Object, example = json!({"sleep": "requested"})),
))]
pub async fn sleep(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    state.queue.request_sleep();
    (StatusCode::ACCEPTED, Json(json!({ "sleep": "requested" })))
}

/// `POST /admin/pause`: 200 — the learner stops taking samples.
#[utoipa::path(post, path = "/admin/pause", tag = TAG_ADMIN, responses(
    (status = 200, description = "Learning stops; `/learn` keeps queueing until the queue is full.", body = Object, example = json!({"paused": true})),
))]
pub async fn pause(State(state): State<Arc<AppState>>) -> Json<Value> {
    state.queue.set_paused(true);
    tracing::info!("learning paused");
    Json(json!({ "paused": true }))
}

/// `POST /admin/resume`: 200 — the learner takes samples again.
#[utoipa::path(post, path = "/admin/resume", tag = TAG_ADMIN, responses(
    (status = 200, description = "Learning resumes.", body = Object, example = json!({"paused": false})),
))]
pub async fn resume(State(state): State<Arc<AppState>>) -> Json<Value> {
    state.queue.set_paused(false);
    tracing::info!("learning resumed");
    Json(json!({ "paused": false }))
}
