//! Server and model metadata: `GET /v2` and `GET /v2/models/ffd`, which tell a client the
//! model's one input and two outputs.

use std::sync::Arc;

use axum::extract::{Path, State};

use crate::service::http::error::ApiError;
use crate::service::http::json::Json;
use crate::service::http::openapi::TAG_V2;
use crate::service::http::AppState;

use super::error::V2ErrorBody;
use super::types::{ModelMetadata, ServerMetadata, TensorMetadata};
use super::{check_model, INPUT_FEATURES, MODEL_NAME, OUTPUT_LABEL, OUTPUT_PROBABILITIES};

/// `platform` of the model metadata.
const PLATFORM: &str = "ffd_forward_forward";
/// The binary tensor extension's name in the server metadata.
const BINARY_TENSOR_EXTENSION: &str = "binary_tensor_data";

/// `GET /v2`.
#[utoipa::path(get, path = "/", tag = TAG_V2, responses(
    (status = 200, description = "Server metadata.", body = ServerMetadata),
))]
pub async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: MODEL_NAME.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: vec![BINARY_TENSOR_EXTENSION.into()],
    })
}

/// `GET /v2/models/{model_name}`.
#[utoipa::path(get, path = "/models/{model_name}", tag = TAG_V2,
    params(("model_name" = String, Path, description = "The model: `ffd`.", example = "ffd")),
    responses(
        (status = 200, description = "The model's tensors.", body = ModelMetadata),
        (status = 404, description = "No such model.", body = V2ErrorBody, example = json!({"error": "unknown model \"resnet\"; this server serves \"ffd\""})),
    )
)]
pub async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(model_name): Path<String>,
) -> Result<Json<ModelMetadata>, ApiError> {
    check_model(&model_name)?;
    let tensor = |name: &str, datatype: &str, shape: Vec<i64>| TensorMetadata {
        name: name.into(),
        datatype: datatype.into(),
        shape,
    };
    let inputs = state.shape.inputs as i64;
    let classes = state.shape.classes as i64;
    Ok(Json(ModelMetadata {
        name: MODEL_NAME.into(),
        platform: PLATFORM.into(),
        inputs: vec![tensor(INPUT_FEATURES, "FP32", vec![-1, inputs])],
        outputs: vec![
            tensor(OUTPUT_LABEL, "INT64", vec![-1]),
            tensor(OUTPUT_PROBABILITIES, "FP32", vec![-1, classes]),
        ],
    }))
}
