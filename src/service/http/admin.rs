//! Operator routes: they send control messages to the learner and never touch the model.
//! `POST /admin/sleep` starts a sleep phase now; `/admin/pause` and `/admin/resume` stop and
//! restart learning (the queue keeps accepting until full, then `/learn` answers 429).
//! `POST /admin/checkpoint` writes a checkpoint now and answers once it is on disk.
//! They always need the learn token (`http::guard`, `Guard::Admin`): without one set, they are
//! refused.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::service::http::error::{ApiError, ErrorBody};
use crate::service::http::json::Json;
use crate::service::http::openapi::TAG_ADMIN;
use crate::service::http::AppState;

/// Longest `/admin/checkpoint` waits for its checkpoint before answering 500.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(120);

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

/// `POST /admin/checkpoint`: 200 with the checkpoint's `last_seq`, `samples_learned`, `file`
/// and `seconds` once it is written and synced (it holds what was learned when the learner
/// took the request); 409 when durability is off; 500 if writing failed.
#[utoipa::path(post, path = "/admin/checkpoint", tag = TAG_ADMIN, responses(
    (status = 200, description = "The checkpoint is written and synced.", body = Object,
        example = json!({"last_seq": 120000, "samples_learned": 120000,
            "file": "ffd-data/checkpoint-00000000000000120000.safetensors", "seconds": 0.08})),
    (status = 409, description = "Durability is off: there are no checkpoints.", body = ErrorBody),
    (status = 500, description = "Writing the checkpoint failed, or took longer than 120 s.", body = ErrorBody),
))]
pub async fn checkpoint(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let durability = state
        .durability
        .as_ref()
        .ok_or(ApiError::DurabilityDisabled)?;
    let mut reports = durability.checkpoints.clone();
    let request = state.queue.request_checkpoint();
    let waited =
        tokio::time::timeout(CHECKPOINT_WAIT, reports.wait_for(|r| r.request >= request)).await;
    let report = match waited {
        Ok(Ok(report)) => report.clone(),
        Ok(Err(_)) => return Err(ApiError::Internal("the checkpoint writer stopped".into())),
        Err(_) => {
            return Err(ApiError::Internal(format!(
                "no checkpoint within {} s",
                CHECKPOINT_WAIT.as_secs()
            )))
        }
    };
    match report.result {
        Ok(path) => Ok(Json(json!({
            "last_seq": report.last_seq,
            "samples_learned": report.samples_learned,
            "file": path.display().to_string(),
            "seconds": report.seconds,
        }))),
        Err(e) => Err(ApiError::Internal(format!(
            "writing the checkpoint failed: {e}"
        ))),
    }
}
