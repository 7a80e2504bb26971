//! `POST /v2/models/ffd/infer`: decode the input tensor, classify every row through the one
//! classification path `/classify` uses ([`classify_rows`]), and answer the requested outputs
//! as JSON or, when asked, as binary tensors after the JSON.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::service::http::classify::{classify_rows, Classified};
use crate::service::http::error::ApiError;
use crate::service::http::extract::{decode_json, read_body};
use crate::service::http::json::Json;
use crate::service::http::openapi::TAG_V2;
use crate::service::http::AppState;

use super::error::V2ErrorBody;
use super::types::{InferRequest, InferResponse, OutputTensor, TensorData};
use super::{
    check_model, framing, tensor, BINARY_DATA, BINARY_DATA_OUTPUT, BINARY_DATA_SIZE,
    INPUT_FEATURES, MODEL_NAME, OUTPUT_LABEL, OUTPUT_PROBABILITIES,
};

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

/// `POST /v2/models/{model_name}/infer`.
#[utoipa::path(post, path = "/models/{model_name}/infer", tag = TAG_V2,
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
        (status = 500, description = "An unexpected failure.", body = V2ErrorBody),
    )
)]
pub async fn model_infer(
    State(state): State<Arc<AppState>>,
    Path(model_name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_model(&model_name)?;
    let limit = state.config.http.max_body_bytes;
    let body = read_body(&headers, body, limit, state.request_timeout()).await?;
    let (json, binary) = framing::split(&headers, body)?;
    let request: InferRequest = decode_json(json).await?;
    let wanted = requested_outputs(&request)?;
    let rows = tensor::feature_rows(&request.inputs, state.shape.inputs, &binary)?;
    let max = state.config.http.max_batch_samples;
    if rows.len() > max {
        return Err(ApiError::InvalidInference(format!(
            "input `{INPUT_FEATURES}`: {} samples; at most {max} are allowed",
            rows.len()
        )));
    }
    let classified = classify_rows(&state, rows).await?;
    respond(request.id, classified, &wanted, state.shape.classes)
}

/// The outputs wanted, in order (both when the request names none), and which go out as
/// binary: an output's `binary_data`, else the request's `binary_data_output`, else JSON.
fn requested_outputs(request: &InferRequest) -> Result<Vec<Wanted>, ApiError> {
    let flag =
        |parameters: Option<&Map<String, Value>>, key: &str| -> Result<Option<bool>, ApiError> {
            match parameters.and_then(|p| p.get(key)) {
                None => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(other) => Err(ApiError::InvalidInference(format!(
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
                return Err(ApiError::InvalidInference(format!(
                    "unknown output {other:?}; the outputs are {OUTPUT_LABEL:?} and {OUTPUT_PROBABILITIES:?}"
                )))
            }
        };
        if wanted.iter().any(|w| w.output == output) {
            return Err(ApiError::InvalidInference(format!(
                "output {:?} is requested twice",
                r.name
            )));
        }
        let binary = flag(r.parameters.as_ref(), BINARY_DATA)?.unwrap_or(default_binary);
        wanted.push(Wanted { output, binary });
    }
    if wanted.is_empty() {
        return Err(ApiError::InvalidInference(
            "`outputs` is empty; leave it out for every output".into(),
        ));
    }
    Ok(wanted)
}

/// The response: plain JSON, or, when any output goes out as binary, the JSON followed by the
/// binary outputs' bytes in order ([`framing::join`]).
fn respond(
    id: Option<String>,
    classified: Classified,
    wanted: &[Wanted],
    classes: usize,
) -> Result<Response, ApiError> {
    let n = classified.scores.len();
    let mut labels = Vec::with_capacity(n);
    let mut probabilities = Vec::with_capacity(n * classes);
    for s in classified.scores {
        labels.push(s.label as i64);
        probabilities.extend_from_slice(&s.probabilities);
    }
    let mut labels = Some(labels);
    let mut probabilities = Some(probabilities);
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
                p.insert(
                    BINARY_DATA_SIZE.into(),
                    Value::from((tail.len() - before) as u64),
                );
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
        model_version: classified.model_version.to_string(),
        id,
        outputs,
    };
    if tail.is_empty() {
        return Ok(Json(response).into_response());
    }
    // Not a JSON body (`application/octet-stream`): no final newline between JSON and bytes.
    let json = serde_json::to_vec(&response)
        .map_err(|e| ApiError::Internal(format!("serialising a response: {e}")))?;
    Ok(framing::join(json, &tail))
}
