//! The protocol's probes: `GET /v2/health/live`, `GET /v2/health/ready` and
//! `GET /v2/models/ffd/ready`. Readiness is the service's one definition
//! ([`readiness`](crate::service::http::health::readiness), as `/readyz`); the protocol says
//! "not ready" with 400 and `false` rather than an error.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::service::http::error::ApiError;
use crate::service::http::health::readiness;
use crate::service::http::json::Json;
use crate::service::http::openapi::TAG_V2;
use crate::service::http::AppState;

use super::error::V2ErrorBody;
use super::types::{LiveResponse, ModelReadyResponse, ReadyResponse};
use super::{check_model, MODEL_NAME};

/// `GET /v2/health/live`.
#[utoipa::path(get, path = "/health/live", tag = TAG_V2, responses(
    (status = 200, description = "The server lives.", body = LiveResponse, example = json!({"live": true})),
))]
pub async fn server_live() -> Json<LiveResponse> {
    Json(LiveResponse { live: true })
}

/// `GET /v2/health/ready`: 200 when ready, 400 (the protocol's "false") otherwise.
#[utoipa::path(get, path = "/health/ready", tag = TAG_V2, responses(
    (status = 200, description = "Ready to infer.", body = ReadyResponse, example = json!({"ready": true})),
    (status = 400, description = "Not ready: shutting down, the learner is not running, the write-ahead log cannot be written, or the WAL backlog of a restart is being replayed (as `/readyz`).", body = ReadyResponse, example = json!({"ready": false})),
))]
pub async fn server_ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<ReadyResponse>) {
    let ready = readiness(&state).is_ok();
    (ready_status(ready), Json(ReadyResponse { ready }))
}

/// `GET /v2/models/{model_name}/ready`.
#[utoipa::path(get, path = "/models/{model_name}/ready", tag = TAG_V2,
    params(("model_name" = String, Path, description = "The model: `ffd`.", example = "ffd")),
    responses(
        (status = 200, description = "The model can infer.", body = ModelReadyResponse, example = json!({"name": "ffd", "ready": true})),
        (status = 400, description = "The model cannot infer now (as `/readyz`).", body = ModelReadyResponse, example = json!({"name": "ffd", "ready": false})),
        (status = 404, description = "No such model.", body = V2ErrorBody),
    )
)]
pub async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(model_name): Path<String>,
) -> Result<(StatusCode, Json<ModelReadyResponse>), ApiError> {
    check_model(&model_name)?;
    let ready = readiness(&state).is_ok();
    Ok((
        ready_status(ready),
        Json(ModelReadyResponse {
            name: MODEL_NAME.into(),
            ready,
        }),
    ))
}

/// The protocol's status for a readiness answer.
fn ready_status(ready: bool) -> StatusCode {
    if ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}
