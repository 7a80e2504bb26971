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

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::ff::Classifier;
use crate::service::http::error::{ApiError, InternalDetail};
use crate::service::http::extract::{decode_json, read_body};
use crate::service::http::openapi::TAG_V2;
use crate::service::http::AppState;
use crate::service::sample::check_features;
use crate::service::snapshot::Snapshot;

/// The one model this server serves.
pub const MODEL_NAME: &str = "ffd";
/// The input tensor's name.
pub const INPUT_FEATURES: &str = "features";
/// The output tensor of predicted classes.
pub const OUTPUT_LABEL: &str = "label";
/// The output tensor of per-class probabilities.
pub const OUTPUT_PROBABILITIES: &str = "probabilities";
/// `platform` of the model metadata.
const PLATFORM: &str = "ffd_forward_forward";
/// Batches up to this size are classified on the runtime thread (as in `/classify`).
const INLINE_MAX: usize = 4;
/// Triton's binary tensor extension: the length of the JSON part of a body whose binary tensors
/// follow the JSON.
const BINARY_HEADER: &str = "inference-header-content-length";
/// The binary tensor extension's name in the server metadata.
const BINARY_TENSOR_EXTENSION: &str = "binary_tensor_data";
/// Tensor parameter: the tensor's bytes follow the JSON instead of being in `data`.
const BINARY_DATA_SIZE: &str = "binary_data_size";
/// Output parameter: return this output as binary.
const BINARY_DATA: &str = "binary_data";
/// Request parameter: return every output as binary unless the output says otherwise.
const BINARY_DATA_OUTPUT: &str = "binary_data_output";

/// A v2 failure: a status and `{"error": "..."}`.
#[derive(Debug)]
pub struct V2Error {
    status: StatusCode,
    message: String,
    /// The detail of a 500, for the logging middleware (never sent).
    internal: Option<String>,
}

/// The v2 error body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"error": "input `features`: shape [2, 784] needs 1568 values, data has 1567"}))]
pub struct V2ErrorBody {
    /// What is wrong, for a person.
    pub error: String,
}

impl V2Error {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            internal: None,
        }
    }
}

impl From<ApiError> for V2Error {
    /// Keeps the status of a body that could not be read (413, 408, ...); the protocol's
    /// 400 is for requests that were read and are wrong.
    fn from(e: ApiError) -> Self {
        let status = e.status();
        match e {
            ApiError::Internal(detail) => Self {
                status,
                message: "internal error".into(),
                internal: Some(detail),
            },
            other => Self {
                status,
                message: other.to_string(),
                internal: None,
            },
        }
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(V2ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if let Some(detail) = self.internal {
            response.extensions_mut().insert(InternalDetail(detail));
        }
        response
    }
}

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
    /// `binary_data_size`.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
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
    /// Row-major values (absent for a binary output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<TensorData>,
}

/// Output values.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TensorData {
    /// `INT64` classes.
    Int(Vec<i64>),
    /// `FP32` probabilities.
    Float(Vec<f32>),
}

/// Which outputs, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Label,
    Probabilities,
}

/// One requested output and whether it goes out as binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Wanted {
    output: Output,
    binary: bool,
}

/// The samples of a valid request: `rows` vectors of the model's width.
#[derive(Debug)]
struct FeatureRows {
    values: Vec<f32>,
    rows: usize,
}

/// Refuses any model but [`MODEL_NAME`] with 404.
fn check_model(name: &str) -> Result<(), V2Error> {
    if name == MODEL_NAME {
        return Ok(());
    }
    Err(V2Error {
        status: StatusCode::NOT_FOUND,
        message: format!("unknown model {name:?}; this server serves {MODEL_NAME:?}"),
        internal: None,
    })
}

fn is_ready(state: &AppState) -> bool {
    !state.shutdown.is_triggered() && state.status.is_running()
}

/// `GET /v2/health/live`.
#[utoipa::path(get, path = "/v2/health/live", tag = TAG_V2, responses(
    (status = 200, description = "The server lives.", body = LiveResponse, example = json!({"live": true})),
))]
pub async fn server_live() -> Json<LiveResponse> {
    Json(LiveResponse { live: true })
}

/// `GET /v2/health/ready`: 200 when ready, 400 (the protocol's "false") otherwise.
#[utoipa::path(get, path = "/v2/health/ready", tag = TAG_V2, responses(
    (status = 200, description = "Ready to infer.", body = ReadyResponse, example = json!({"ready": true})),
    (status = 400, description = "Not ready (shutting down, or the learner is gone).", body = ReadyResponse, example = json!({"ready": false})),
))]
pub async fn server_ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<ReadyResponse>) {
    let ready = is_ready(&state);
    (ready_status(ready), Json(ReadyResponse { ready }))
}

fn ready_status(ready: bool) -> StatusCode {
    if ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}

/// `GET /v2`.
#[utoipa::path(get, path = "/v2", tag = TAG_V2, responses(
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
#[utoipa::path(get, path = "/v2/models/{model_name}", tag = TAG_V2,
    params(("model_name" = String, Path, description = "The model: `ffd`.", example = "ffd")),
    responses(
        (status = 200, description = "The model's tensors.", body = ModelMetadata),
        (status = 404, description = "No such model.", body = V2ErrorBody, example = json!({"error": "unknown model \"resnet\"; this server serves \"ffd\""})),
    )
)]
pub async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(model_name): Path<String>,
) -> Result<Json<ModelMetadata>, V2Error> {
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

/// `GET /v2/models/{model_name}/ready`.
#[utoipa::path(get, path = "/v2/models/{model_name}/ready", tag = TAG_V2,
    params(("model_name" = String, Path, description = "The model: `ffd`.", example = "ffd")),
    responses(
        (status = 200, description = "The model can infer.", body = ModelReadyResponse, example = json!({"name": "ffd", "ready": true})),
        (status = 400, description = "The model cannot infer now.", body = ModelReadyResponse, example = json!({"name": "ffd", "ready": false})),
        (status = 404, description = "No such model.", body = V2ErrorBody),
    )
)]
pub async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(model_name): Path<String>,
) -> Result<(StatusCode, Json<ModelReadyResponse>), V2Error> {
    check_model(&model_name)?;
    let ready = is_ready(&state);
    Ok((
        ready_status(ready),
        Json(ModelReadyResponse {
            name: MODEL_NAME.into(),
            ready,
        }),
    ))
}

/// `POST /v2/models/{model_name}/infer`.
#[utoipa::path(post, path = "/v2/models/{model_name}/infer", tag = TAG_V2,
    params(("model_name" = String, Path, description = "The model: `ffd`.", example = "ffd")),
    request_body(content = InferRequest, content_type = "application/json",
        description = "An inference request. With the `Inference-Header-Content-Length` header \
            (Triton's binary tensor extension), the body is that many bytes of JSON followed by \
            the input's little-endian values, and the input has `parameters.binary_data_size` \
            instead of `data`. The `Content-Type` is not checked.",
        examples(
        ("nested, one output" = (value = json!({"id": "r1", "inputs": [{"name": "features", "shape": [2, 3], "datatype": "FP32",
            "data": [[0.0, 0.5, 1.0], [1.0, 0.0, 0.25]]}], "outputs": [{"name": "label"}]}))),
        ("flat, both outputs" = (value = json!({"inputs": [{"name": "features", "shape": [-1, 3], "datatype": "FP32",
            "data": [0.0, 0.5, 1.0, 1.0, 0.0, 0.25]}]}))),
    )),
    responses(
        (status = 200, description = "The requested outputs. When an output is asked for as binary \
            (`binary_data` or `binary_data_output`), the body is `application/octet-stream`: the JSON \
            (its length in the `Inference-Header-Content-Length` header), then each binary output's \
            little-endian values in order.", body = InferResponse,
            headers(("Inference-Header-Content-Length" = u64, description = "Length of the JSON part, with binary outputs."))),
        (status = 400, description = "A bad request: JSON, input name, datatype, shape, data, or output name.", body = V2ErrorBody),
        (status = 404, description = "No such model.", body = V2ErrorBody),
        (status = 408, description = "The body was too slow.", body = V2ErrorBody),
        (status = 413, description = "The body is over `http.max_body_bytes`.", body = V2ErrorBody),
    )
)]
pub async fn model_infer(
    State(state): State<Arc<AppState>>,
    Path(model_name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V2Error> {
    check_model(&model_name)?;
    let limit = state.config.http.max_body_bytes;
    let body = read_body(&headers, body, limit, state.request_timeout()).await?;
    let (json, binary) = split_binary(&headers, body)?;
    let request: InferRequest = decode_json(json).await.map_err(|e| match e {
        // JSON that does not decode is the client's request being wrong: the protocol says 400.
        ApiError::MalformedJson(m) | ApiError::InvalidShape(m) => V2Error::bad_request(m),
        other => other.into(),
    })?;
    let wanted = requested_outputs(&request)?;
    let rows = feature_rows(&request.inputs, state.shape.inputs, &binary)?;
    let max = state.config.http.max_batch_samples;
    if rows.rows > max {
        return Err(V2Error::bad_request(format!(
            "input `{INPUT_FEATURES}`: {} samples; at most {max} are allowed",
            rows.rows
        )));
    }

    let snapshot = state.snapshots.load();
    let classifier = state.classifier;
    let classified = if rows.rows <= INLINE_MAX {
        classify_rows(&snapshot, &rows, classifier)
    } else {
        tokio::task::spawn_blocking(move || classify_rows(&snapshot, &rows, classifier))
            .await
            .map_err(|e| ApiError::Internal(format!("inference task failed: {e}")))?
    }?;
    Ok(respond(
        request.id,
        classified,
        &wanted,
        state.shape.classes,
    ))
}

/// The response: plain JSON, or, when any output goes out as binary, the JSON followed by the
/// binary outputs' bytes in order, with the JSON's length in `Inference-Header-Content-Length`.
fn respond(
    id: Option<String>,
    classified: Classified,
    wanted: &[Wanted],
    classes: usize,
) -> Response {
    let n = classified.labels.len();
    let mut labels = Some(classified.labels);
    let mut probabilities = Some(classified.probabilities);
    let mut tail = Vec::new();
    let outputs = wanted
        .iter()
        .map(|w| {
            let (name, shape, datatype, data) = match w.output {
                Output::Label => (
                    OUTPUT_LABEL,
                    vec![n],
                    "INT64",
                    TensorData::Int(labels.take().unwrap_or_default()),
                ),
                Output::Probabilities => (
                    OUTPUT_PROBABILITIES,
                    vec![n, classes],
                    "FP32",
                    TensorData::Float(probabilities.take().unwrap_or_default()),
                ),
            };
            let (parameters, data) = if w.binary {
                let before = tail.len();
                data.write_le(&mut tail);
                let mut p = Map::new();
                p.insert(BINARY_DATA_SIZE.into(), json_number(tail.len() - before));
                (Some(p), None)
            } else {
                (None, Some(data))
            };
            OutputTensor {
                name: name.into(),
                shape,
                datatype: datatype.into(),
                parameters,
                data,
            }
        })
        .collect();
    let response = InferResponse {
        model_name: MODEL_NAME.into(),
        model_version: classified.version.to_string(),
        id,
        outputs,
    };
    if tail.is_empty() {
        return Json(response).into_response();
    }
    let mut body = match serde_json::to_vec(&response) {
        Ok(json) => json,
        Err(e) => {
            return V2Error::from(ApiError::Internal(format!("serialising a response: {e}")))
                .into_response()
        }
    };
    let json_len = body.len();
    body.extend_from_slice(&tail);
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        body,
    )
        .into_response();
    response
        .headers_mut()
        .insert(BINARY_HEADER, HeaderValue::from(json_len));
    response
}

fn json_number(n: usize) -> Value {
    Value::from(n as u64)
}

impl TensorData {
    /// Appends the values as little-endian bytes (the binary tensor extension's layout).
    fn write_le(&self, out: &mut Vec<u8>) {
        match self {
            TensorData::Int(values) => values.iter().for_each(|v| out.extend(v.to_le_bytes())),
            TensorData::Float(values) => values.iter().for_each(|v| out.extend(v.to_le_bytes())),
        }
    }
}

/// Splits a body into its JSON and the binary tensors after it, as the
/// `Inference-Header-Content-Length` header says; the whole body is JSON without it. The body
/// is JSON whatever its `Content-Type` says: clients differ (some send none, curl sends a form
/// type, `tritonclient` sends none with binary tensors).
fn split_binary(
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<(bytes::Bytes, bytes::Bytes), V2Error> {
    let Some(value) = headers.get(BINARY_HEADER) else {
        return Ok((body, bytes::Bytes::new()));
    };
    let json_len = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or_else(|| V2Error::bad_request("Inference-Header-Content-Length is not a number"))?;
    if json_len > body.len() {
        return Err(V2Error::bad_request(format!(
            "Inference-Header-Content-Length is {json_len}, but the body has {} bytes",
            body.len()
        )));
    }
    let mut json = body;
    let binary = json.split_off(json_len);
    Ok((json, binary))
}

/// The outputs wanted, in order (both when the request names none), and which go out as
/// binary: an output's `binary_data`, else the request's `binary_data_output`, else JSON.
fn requested_outputs(request: &InferRequest) -> Result<Vec<Wanted>, V2Error> {
    let flag =
        |parameters: Option<&Map<String, Value>>, key: &str| -> Result<Option<bool>, V2Error> {
            match parameters.and_then(|p| p.get(key)) {
                None => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(other) => Err(V2Error::bad_request(format!(
                    "parameter `{key}` must be true or false, not {other}"
                ))),
            }
        };
    let default_binary = flag(request.parameters.as_ref(), BINARY_DATA_OUTPUT)?.unwrap_or(false);
    let Some(requested) = request.outputs.as_deref() else {
        return Ok([Output::Label, Output::Probabilities]
            .into_iter()
            .map(|output| Wanted {
                output,
                binary: default_binary,
            })
            .collect());
    };
    let mut wanted: Vec<Wanted> = Vec::with_capacity(requested.len());
    for r in requested {
        let output = match r.name.as_str() {
            OUTPUT_LABEL => Output::Label,
            OUTPUT_PROBABILITIES => Output::Probabilities,
            other => {
                return Err(V2Error::bad_request(format!(
                    "unknown output {other:?}; the outputs are {OUTPUT_LABEL:?} and {OUTPUT_PROBABILITIES:?}"
                )))
            }
        };
        if wanted.iter().any(|w| w.output == output) {
            return Err(V2Error::bad_request(format!(
                "output {:?} is requested twice",
                r.name
            )));
        }
        let binary = flag(r.parameters.as_ref(), BINARY_DATA)?.unwrap_or(default_binary);
        wanted.push(Wanted { output, binary });
    }
    if wanted.is_empty() {
        return Err(V2Error::bad_request(
            "`outputs` is empty; leave it out for every output",
        ));
    }
    Ok(wanted)
}

/// Checks the one input tensor (name, datatype, shape, data) and flattens its values, from
/// JSON `data` or from the `binary` bytes after the JSON.
fn feature_rows(
    inputs: &[InferInput],
    width: usize,
    binary: &[u8],
) -> Result<FeatureRows, V2Error> {
    let input = match inputs {
        [one] => one,
        _ => {
            return Err(V2Error::bad_request(format!(
                "expected exactly one input, `{INPUT_FEATURES}`; got {}",
                inputs.len()
            )))
        }
    };
    let bad = |m: String| V2Error::bad_request(format!("input `{INPUT_FEATURES}`: {m}"));
    if input.name != INPUT_FEATURES {
        return Err(V2Error::bad_request(format!(
            "unknown input {:?}; the model's input is {INPUT_FEATURES:?}",
            input.name
        )));
    }
    let element_bytes = match input.datatype.as_str() {
        "FP32" => 4,
        "FP64" => 8,
        other => {
            return Err(bad(format!(
                "datatype {other:?} is not supported; use FP32 (or FP64)"
            )))
        }
    };
    let (batch, d) = match input.shape.as_slice() {
        [n, d] if (*n == -1 || *n >= 1) && *d >= 0 => (*n, *d as usize),
        _ => {
            return Err(bad(format!(
                "shape {:?} is not [N, {width}] (N >= 1, or -1)",
                input.shape
            )))
        }
    };
    if d != width {
        return Err(bad(format!(
            "shape {:?} has {d} features per sample; the model takes {width}",
            input.shape
        )));
    }
    let binary_size = match input
        .parameters
        .as_ref()
        .and_then(|p| p.get(BINARY_DATA_SIZE))
    {
        None => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            bad(format!(
                "`{BINARY_DATA_SIZE}` must be a byte count, not {v}"
            ))
        })?),
    };
    let mut values = Vec::new();
    let rows = match (binary_size, &input.data) {
        (Some(_), Some(_)) => {
            return Err(bad(format!(
                "has both `data` and `{BINARY_DATA_SIZE}`; send one"
            )))
        }
        (None, None) => return Err(bad("has no `data`".into())),
        (None, Some(data)) => {
            if !binary.is_empty() {
                return Err(bad(format!(
                    "{} bytes of binary data follow the JSON, but no input has `{BINARY_DATA_SIZE}`",
                    binary.len()
                )));
            }
            flatten(data, batch, width, &mut values).map_err(bad)?
        }
        (Some(size), None) => {
            if size != binary.len() as u64 {
                return Err(bad(format!(
                    "`{BINARY_DATA_SIZE}` is {size}, but {} bytes follow the JSON",
                    binary.len()
                )));
            }
            decode_le(binary, element_bytes, batch, width, &mut values).map_err(bad)?
        }
    };
    for (row, sample) in values.chunks_exact(width).enumerate() {
        check_features(sample, width).map_err(|e| bad(format!("sample {row}: {}", e.detail)))?;
    }
    Ok(FeatureRows { values, rows })
}

/// Decodes little-endian FP32 (`element_bytes` 4) or FP64 (8) values into `out`; returns the
/// number of rows of `width`, which must match `batch` unless it is `-1`.
fn decode_le(
    bytes: &[u8],
    element_bytes: usize,
    batch: i64,
    width: usize,
    out: &mut Vec<f32>,
) -> Result<usize, String> {
    let row_bytes = width * element_bytes;
    if bytes.is_empty() || row_bytes == 0 || bytes.len() % row_bytes != 0 {
        return Err(format!(
            "{} bytes of binary data are not a whole number of samples of {width} values of {element_bytes} bytes",
            bytes.len()
        ));
    }
    let rows = bytes.len() / row_bytes;
    if batch != -1 && batch as usize != rows {
        return Err(format!(
            "shape [{batch}, {width}] needs {} bytes, the binary data has {}",
            batch as usize * row_bytes,
            bytes.len()
        ));
    }
    out.reserve(rows * width);
    if element_bytes == 4 {
        out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
    } else {
        out.extend(
            bytes.chunks_exact(8).map(|b| {
                f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
            }),
        );
    }
    Ok(rows)
}

/// Flattens `data` (row-major numbers, or `rows` arrays of `width` numbers) into `out` and
/// returns the number of rows; `batch` is the declared row count, `-1` for any.
fn flatten(data: &Value, batch: i64, width: usize, out: &mut Vec<f32>) -> Result<usize, String> {
    let Value::Array(items) = data else {
        return Err("`data` must be an array".into());
    };
    let nested = items.first().is_some_and(Value::is_array);
    let rows = if nested {
        for (r, row) in items.iter().enumerate() {
            let Value::Array(row) = row else {
                return Err(format!("`data` row {r} is not an array"));
            };
            if row.len() != width {
                return Err(format!(
                    "`data` row {r} has {} values, expected {width}",
                    row.len()
                ));
            }
            for v in row {
                out.push(number(v, out.len())?);
            }
        }
        items.len()
    } else {
        for v in items {
            out.push(number(v, out.len())?);
        }
        if width == 0 || items.len() % width != 0 {
            return Err(format!(
                "`data` has {} values, not a whole number of samples of {width}",
                items.len()
            ));
        }
        items.len() / width
    };
    if rows == 0 {
        return Err("`data` is empty".into());
    }
    if batch != -1 && batch as usize != rows {
        return Err(format!(
            "shape [{batch}, {width}] needs {} values, `data` has {}",
            batch as usize * width,
            out.len()
        ));
    }
    Ok(rows)
}

/// One JSON number as `f32` (a value beyond FP32's range becomes infinite, refused later).
fn number(v: &Value, at: usize) -> Result<f32, String> {
    v.as_f64()
        .map(|x| x as f32)
        .ok_or_else(|| format!("`data` value {at} is not a number: {v}"))
}

/// What one snapshot said about every row.
struct Classified {
    labels: Vec<i64>,
    probabilities: Vec<f32>,
    version: u64,
}

fn classify_rows(
    snapshot: &Snapshot,
    rows: &FeatureRows,
    classifier: Classifier,
) -> Result<Classified, V2Error> {
    let scores = snapshot
        .model
        .classify_batch(&rows.values, classifier)
        .map_err(|e| ApiError::Internal(format!("validated features refused: {e}")))?;
    let labels = scores.iter().map(|s| s.label as i64).collect();
    let probabilities = scores
        .iter()
        .flat_map(|s| s.probabilities.iter().copied())
        .collect();
    Ok(Classified {
        labels,
        probabilities,
        version: snapshot.version,
    })
}

/// Answers a request the middleware refuses (401, 403, 503) in the error shape of the route it
/// was for: `{"error": "..."}` under `/v2`, so Open Inference Protocol clients can read every
/// error they get, and ours elsewhere. Status and headers (`WWW-Authenticate`, `Retry-After`)
/// are the same either way.
pub fn refusal(path: &str, e: ApiError) -> Response {
    if !super::openapi::is_v2(path) {
        return e.into_response();
    }
    let message = e.to_string();
    let (parts, _) = e.into_response().into_parts();
    let body = serde_json::to_vec(&V2ErrorBody { error: message }).unwrap_or_default();
    Response::from_parts(parts, axum::body::Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(data: Value, batch: i64) -> Result<(usize, Vec<f32>), String> {
        let mut out = Vec::new();
        flatten(&data, batch, 3, &mut out).map(|n| (n, out))
    }

    #[test]
    fn flat_and_nested_data_flatten_alike() {
        let flat = rows(json!([1, 2, 3, 4, 5, 6]), 2).expect("flat");
        let nested = rows(json!([[1, 2, 3], [4, 5, 6]]), -1).expect("nested");
        assert_eq!(flat, nested);
        assert_eq!(flat.0, 2);
    }

    #[test]
    fn data_that_does_not_fit_the_shape_is_refused() {
        assert!(rows(json!([1, 2, 3, 4, 5]), -1).is_err());
        assert!(rows(json!([1, 2, 3]), 2).is_err());
        assert!(rows(json!([[1, 2, 3], [4, 5]]), 2).is_err());
        assert!(rows(json!([[1, 2, 3], 4]), 2).is_err());
        assert!(rows(json!([1, "2", 3]), 1).is_err());
        assert!(rows(json!([]), -1).is_err());
    }
}
