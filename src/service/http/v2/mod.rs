//! The Open Inference Protocol (KServe v2) REST endpoints, so Triton and KServe clients can
//! classify without knowing ffd: health (`/v2/health/live`, `/v2/health/ready`), server and
//! model metadata (`/v2`, `/v2/models/ffd`), model readiness and `POST /v2/models/ffd/infer`.
//!
//! The model is `ffd`: input `features` (FP32 `[-1, D]`), outputs `label` (INT64 `[-1]`) and
//! `probabilities` (FP32 `[-1, C]`, the same probabilities `/classify` returns). Inference uses
//! the published snapshot, like `/classify`, and never learns. Tensor data is JSON, flat
//! (row-major) or nested, or raw little-endian bytes after the JSON (Triton's binary tensor
//! extension, which `tritonclient` uses by default); FP64 input is accepted and narrowed to
//! FP32. Errors follow the protocol, `{"error": "..."}`: 400 for a bad request, 404 for an
//! unknown model.
//!
//! Layout: [`types`] (the bodies), [`tensor`] (the tensor codec), [`framing`] (the binary
//! extension's JSON + bytes framing), [`error`] (the error shape), and the handlers:
//! [`health`], [`metadata`], [`infer`]. The routes form their own router, nested under `/v2`
//! (see `http::RouteGroups`), whose [`error::protocol_shape`] layer gives every error the
//! protocol's shape; the generic middleware and handlers fail with the one `ApiError`.

pub mod error;
pub mod framing;
pub mod health;
pub mod infer;
pub mod metadata;
pub mod tensor;
pub mod types;

use crate::service::http::error::ApiError;

/// The one model this server serves.
pub const MODEL_NAME: &str = "ffd";
/// The input tensor's name.
pub const INPUT_FEATURES: &str = "features";
/// The output tensor of predicted classes.
pub const OUTPUT_LABEL: &str = "label";
/// The output tensor of per-class probabilities.
pub const OUTPUT_PROBABILITIES: &str = "probabilities";
/// Tensor parameter: the tensor's bytes follow the JSON instead of being in `data`.
const BINARY_DATA_SIZE: &str = "binary_data_size";
/// Output parameter: return this output as binary.
const BINARY_DATA: &str = "binary_data";
/// Request parameter: return every output as binary unless the output says otherwise.
const BINARY_DATA_OUTPUT: &str = "binary_data_output";

/// Refuses any model but [`MODEL_NAME`] with 404.
fn check_model(name: &str) -> Result<(), ApiError> {
    if name == MODEL_NAME {
        return Ok(());
    }
    Err(ApiError::UnknownModel(format!(
        "unknown model {name:?}; this server serves {MODEL_NAME:?}"
    )))
}
