//! The Open Inference Protocol's request and response bodies, as serde and OpenAPI types.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// `{"live": true}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LiveResponse {
    /// Always `true`: an answer means the server lives.
    pub live: bool,
}

/// `{"ready": bool}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadyResponse {
    /// Whether the server can infer and learn.
    pub ready: bool,
}

/// `{"name", "ready"}` of a model.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelReadyResponse {
    /// The model (`ffd`).
    pub name: String,
    /// Whether it can infer.
    pub ready: bool,
}

/// Server metadata.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"name": "ffd", "version": "0.1.0", "extensions": ["binary_tensor_data"]}))]
pub struct ServerMetadata {
    /// `ffd`.
    pub name: String,
    /// The server's version.
    pub version: String,
    /// Protocol extensions supported: `binary_tensor_data` (Triton's binary tensors).
    pub extensions: Vec<String>,
}

/// A tensor's name, datatype and shape (`-1`: any size).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TensorMetadata {
    /// The tensor's name.
    pub name: String,
    /// `FP32`, `INT64`, ...
    pub datatype: String,
    /// Dimensions; `-1` is any size.
    pub shape: Vec<i64>,
}

/// Model metadata.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"name": "ffd", "platform": "ffd_forward_forward",
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 784]}],
    "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]}))]
pub struct ModelMetadata {
    /// `ffd`.
    pub name: String,
    /// `ffd_forward_forward`.
    pub platform: String,
    /// `features`.
    pub inputs: Vec<TensorMetadata>,
    /// `label` and `probabilities`.
    pub outputs: Vec<TensorMetadata>,
}

/// An inference request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "r1", "inputs": [{"name": "features", "shape": [2, 3], "datatype": "FP32",
    "data": [[0.0, 0.5, 1.0], [1.0, 0.0, 0.25]]}], "outputs": [{"name": "label"}]}))]
pub struct InferRequest {
    /// Echoed in the response.
    pub id: Option<String>,
    /// Request parameters: `binary_data_output: true` returns every output as binary unless the
    /// output says otherwise; others are ignored.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    /// Exactly one tensor, `features`.
    pub inputs: Vec<InferInput>,
    /// The outputs wanted, in this order; both when absent.
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// An input tensor.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InferInput {
    /// `features`.
    pub name: String,
    /// `[N, D]` (`N` may be `-1`: taken from the data); `D` = the model's inputs.
    pub shape: Vec<i64>,
    /// `FP32`, or `FP64` (narrowed to FP32; a value beyond FP32's range is refused).
    pub datatype: String,
    /// Tensor parameters: `binary_data_size` says the values are that many little-endian
    /// bytes after the JSON (Triton's binary tensor extension) instead of `data`.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    /// `N × D` numbers, flat in row-major order or nested `[[...], ...]`; absent with
    /// `binary_data_size`. (The served document states the exact shapes for the configured
    /// sizes: `openapi::exact_document`.)
    #[serde(default)]
    #[schema(value_type = Option<Vec<f64>>)]
    pub data: Option<Value>,
}

/// An output the client wants.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestedOutput {
    /// `label` or `probabilities`.
    pub name: String,
    /// Output parameters: `binary_data: true` returns the output as little-endian bytes after
    /// the JSON (Triton's binary tensor extension).
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
}

/// An inference response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"model_name": "ffd", "model_version": "42", "id": "r1",
    "outputs": [{"name": "label", "shape": [2], "datatype": "INT64", "data": [3, 7]}]}))]
pub struct InferResponse {
    /// `ffd`.
    pub model_name: String,
    /// Version of the snapshot that answered.
    pub model_version: String,
    /// The request's `id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The requested outputs, in the requested order.
    pub outputs: Vec<OutputTensor>,
}

/// An output tensor.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OutputTensor {
    /// `label` or `probabilities`.
    pub name: String,
    /// `[N]` or `[N, C]`.
    pub shape: Vec<usize>,
    /// `INT64` or `FP32`.
    pub datatype: String,
    /// `{"binary_data_size": n}` when the values are bytes after the JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    /// Row-major values (absent for a binary output): integers for `INT64`, numbers for `FP32`;
    /// documented as one number array, which both validate against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<f64>>)]
    pub data: Option<TensorData>,
}

/// Output values.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TensorData {
    /// `INT64` classes.
    Int(Vec<i64>),
    /// `FP32` probabilities.
    Float(Vec<f32>),
}
