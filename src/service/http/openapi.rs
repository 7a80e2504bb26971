//! `GET /openapi.json`: the OpenAPI 3.1 document of the whole HTTP API. It is generated from
//! the handlers' `#[utoipa::path]` annotations and the `ToSchema` types where the request and
//! response bodies are defined, by the same route table that builds the router
//! ([`super::api`]), so it lists exactly the routes served.
//!
//! The request bodies' schemas are then rewritten for the configured sizes
//! ([`exact_document`]): every rule the server enforces on a JSON body is stated (the feature
//! count, the label range, the feature range, the id length, one shape of request out of
//! several, the batch limits, the v2 tensor shapes), so a request valid against the document
//! is one the server takes, and one invalid against it is refused; the examples are built with
//! the configured sizes too. What no schema can state is said in descriptions, and answered
//! with a status that says "valid, but not now": an id the pending map no longer holds (409),
//! a full queue (429), an unavailable service (503).

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::Extension;
use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use crate::service::config::Config;
use crate::service::http::error::ErrorCode;
use crate::service::http::extract::{JSON, NDJSON};
use crate::service::http::guard::Guard;
use crate::service::pending::MAX_ID_CHARS;
use crate::service::sample::MAX_ABS_FEATURE;

/// Tag of the learning and classification routes.
pub const TAG_V1: &str = "v1";
/// Tag of the probes and the metrics.
pub const TAG_HEALTH: &str = "health";
/// Tag of the operator routes.
pub const TAG_ADMIN: &str = "admin";
/// Tag of the Open Inference Protocol routes.
pub const TAG_V2: &str = "v2";
/// Tag of the status page and its data.
pub const TAG_STATUS_PAGE: &str = "status page";

/// The document's header: title, version, description and tags; the paths and schemas come
/// from the route table.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ffd",
        description = "A service that learns from a live stream with the Forward-Forward algorithm. \
            The v1 API learns and classifies; its errors are `{\"error\": {\"code\", \"message\"}}`. \
            The v2 routes follow the Open Inference Protocol (KServe v2) for inference clients; \
            their errors are `{\"error\": \"...\"}`."
    ),
    tags(
        (name = TAG_V1, description = "Learn from labelled samples; classify with the current snapshot."),
        (name = TAG_HEALTH, description = "Probes, model information and Prometheus metrics."),
        (name = TAG_ADMIN, description = "Control messages to the learner; they need the learn token."),
        (name = TAG_V2, description = "Open Inference Protocol (KServe v2) REST endpoints."),
        (name = TAG_STATUS_PAGE, description = "The live status page and its data."),
    )
)]
struct DocumentBase;

/// The document before the routes are added, with the crate's version.
pub fn document_base() -> utoipa::openapi::OpenApi {
    let mut document = DocumentBase::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    document
}

/// The serialised document, shared by every request.
#[derive(Debug, Clone)]
pub struct OpenApiJson(Arc<str>);

impl OpenApiJson {
    /// Serialises `document` once.
    pub fn new(document: &Value) -> Self {
        // Serialising a JSON value cannot fail; an empty object would show it did.
        let mut text = serde_json::to_string_pretty(document).unwrap_or_else(|_| "{}".to_owned());
        text.push('\n');
        Self(text.into())
    }
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = TAG_HEALTH,
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.",
        content_type = "application/json", body = Object,
        example = json!({"openapi": "3.1.0", "info": {"title": "ffd", "version": "0.1.0"}, "paths": {}})))
)]
pub async fn openapi_json(Extension(document): Extension<OpenApiJson>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, JSON)], document.0.to_string())
}

/// Name of the bearer-token security scheme in the document.
const BEARER: &str = "bearer";

/// Documents what a route group's middleware adds to each of its operations: the token its
/// [`Guard`] asks for (as a security requirement, with the 401 and 403 answers) and, for
/// `limited` groups, the 503 of the global request limit, in the v2 error shape for the `v2`
/// groups. The handlers' own annotations cannot say this, because which guard wraps a handler
/// is decided where the router is built.
pub fn document_access(
    document: &mut utoipa::openapi::OpenApi,
    guard: Guard,
    limited: bool,
    v2: bool,
) {
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};

    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    // Learn and admin always document the token (a deployment without one is the exception the
    // service warns about); the others need one only when the operator closes them, so the
    // empty requirement says "or none".
    let security = match guard {
        Guard::Learn | Guard::Admin => vec![SecurityRequirement::new(BEARER, Vec::<String>::new())],
        Guard::Read | Guard::Metrics | Guard::Health => vec![
            SecurityRequirement::default(),
            SecurityRequirement::new(BEARER, Vec::<String>::new()),
        ],
    };
    let schema = if v2 { "V2ErrorBody" } else { "ErrorBody" };
    let mut refusals = vec![
        ErrorCode::DuplicateAuthorization,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
    ];
    if limited {
        refusals.push(ErrorCode::Overloaded);
    }
    for item in document.paths.paths.values_mut() {
        for operation in operations(item) {
            operation.security = Some(security.clone());
            for code in &refusals {
                let entry = operation
                    .responses
                    .responses
                    .entry(code.status().as_str().to_owned());
                match entry {
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(error_response(schema, code.description()).into());
                    }
                    std::collections::btree_map::Entry::Occupied(mut e) => {
                        if let utoipa::openapi::RefOr::T(response) = e.get_mut() {
                            also_error(response, schema, code.description());
                        }
                    }
                }
            }
        }
    }
}

/// Widens a documented answer that is not an error body (the v2 readiness routes answer 400
/// `{"ready": false}`) so that the error body sent with the same status validates too.
fn also_error(response: &mut utoipa::openapi::Response, schema: &str, description: &str) {
    use utoipa::openapi::schema::AnyOfBuilder;
    use utoipa::openapi::{Ref, RefOr};
    let Some(content) = response.content.get_mut(JSON) else {
        return;
    };
    let error = Ref::from_schema_name(schema);
    let current = content.schema.take();
    let already = matches!(&current, Some(RefOr::Ref(r)) if r.ref_location == error.ref_location);
    content.schema = match current {
        Some(current) if !already => {
            response.description = format!("{} Or: {description}", response.description);
            Some(AnyOfBuilder::new().item(current).item(error).into())
        }
        other => other,
    };
}

/// Appends to every v1 error answer in `document` the error codes sent with its status, from
/// the one error table ([`ErrorCode`]).
pub fn document_error_codes(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    for item in document.paths.paths.values_mut() {
        for operation in operations(item) {
            for (status, response) in operation.responses.responses.iter_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                let v1_error = response
                    .content
                    .get(JSON)
                    .and_then(|c| c.schema.as_ref())
                    .is_some_and(|s| {
                        matches!(s, RefOr::Ref(r) if r.ref_location.ends_with("/ErrorBody")
                            || r.ref_location.ends_with("/ReadinessError"))
                    });
                let Ok(status) = axum::http::StatusCode::from_bytes(status.as_bytes()) else {
                    continue;
                };
                if !v1_error {
                    continue;
                }
                let codes = ErrorCode::with_status(status)
                    .map(|c| format!("`{}`", c.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ");
                if !codes.is_empty() {
                    response.description = format!(
                        "{} Error codes with this status: {codes}.",
                        response.description
                    );
                }
            }
        }
    }
}

/// The operations of a path item.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}

/// A JSON error answer with the schema named `schema`.
fn error_response(schema: &str, description: &str) -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(schema)))
                .build(),
        )
        .build()
}

/// The configured sizes the request schemas state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `network.inputs`: features per sample.
    pub inputs: usize,
    /// `network.classes`: labels are `0..classes`.
    pub classes: usize,
    /// `http.max_batch_samples`: samples per batch, rows per v2 input.
    pub max_batch_samples: usize,
}

impl Limits {
    /// The sizes `config` serves.
    pub fn of(config: &Config) -> Self {
        Self {
            inputs: config.network.inputs,
            classes: config.network.classes,
            max_batch_samples: config.http.max_batch_samples,
        }
    }
}

/// The served document: `document` (from the route table) as JSON, with the request schemas
/// and examples of the JSON bodies stating the rules the server enforces for `limits`.
pub fn exact_document(document: &utoipa::openapi::OpenApi, limits: Limits) -> Value {
    // Serialising a document of plain strings, maps and numbers cannot fail; an empty object
    // would show it did.
    let mut document = serde_json::to_value(document).unwrap_or_else(|_| json!({}));
    if let Some(schemas) =
        at(&mut document, &["components", "schemas"]).and_then(Value::as_object_mut)
    {
        schemas.extend(
            request_schemas(limits)
                .into_iter()
                .map(|(name, schema)| (name.to_owned(), schema)),
        );
    }
    let examples = Examples::new(limits);
    set_request_examples(&mut document, "/learn", JSON, examples.learn());
    set_ndjson_example(&mut document, examples.learn_line());
    set_request_examples(&mut document, "/classify", JSON, examples.classify());
    set_request_examples(&mut document, INFER_PATH, JSON, examples.infer());
    let model_name = json!({"type": "string", "enum": [crate::service::http::v2::MODEL_NAME]});
    if let Some(paths) = at(&mut document, &["paths"]).and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            if !path.contains("{model_name}") {
                continue;
            }
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for operation in item.values_mut() {
                let parameters = at(operation, &["parameters"]).and_then(Value::as_array_mut);
                for parameter in parameters.into_iter().flatten() {
                    if parameter["name"] == "model_name" {
                        parameter["schema"] = model_name.clone();
                    }
                }
            }
        }
    }
    // The rule `/learn` enforces on `Idempotency-Key` (1 to 128 visible ASCII characters),
    // which the handler's annotation cannot state.
    let learn = at(&mut document, &["paths", "/learn", "post", "parameters"]);
    for parameter in learn.and_then(Value::as_array_mut).into_iter().flatten() {
        if parameter["name"] == "Idempotency-Key" {
            parameter["schema"] = json!({
                "type": "string",
                "minLength": 1,
                "maxLength": super::learn::MAX_IDEMPOTENCY_KEY,
                "pattern": "^[!-~]+$",
            });
        }
    }
    // With a binary output, the answer is the JSON followed by the outputs' bytes.
    let ok = at(
        &mut document,
        &["paths", INFER_PATH, "post", "responses", "200", "content"],
    );
    if let Some(content) = ok.and_then(Value::as_object_mut) {
        content.insert(
            "application/octet-stream".into(),
            json!({"schema": {"type": "string", "format": "binary"}}),
        );
    }
    document
}

/// The value at `keys` (object keys, outermost first), if there is one.
fn at<'a>(value: &'a mut Value, keys: &[&str]) -> Option<&'a mut Value> {
    keys.iter().try_fold(value, |v, k| v.get_mut(*k))
}

/// The v2 inference route, as the document lists it.
const INFER_PATH: &str = "/v2/models/{model_name}/infer";

/// `#/components/schemas/{name}`.
fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A JSON object with exactly `properties` (the server refuses unknown fields), of which
/// `required` must be present.
fn object(required: &[&str], properties: Value) -> Value {
    json!({
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": false,
    })
}

/// A field sent as `null`: the server takes it as absent.
fn absent() -> Value {
    json!({ "type": "null" })
}

/// `schema`, or `null` for absent.
fn or_null(schema: Value) -> Value {
    json!({ "anyOf": [schema, absent()] })
}

/// The largest feature magnitude a JSON number may have, and whether it is inclusive. The
/// server reads a feature as a 32-bit float and refuses it beyond [`MAX_ABS_FEATURE`], so the
/// exact bound is the midpoint between it and the next 32-bit float: a number there rounds to
/// the even one of the two.
fn feature_bound() -> (f64, bool) {
    let next = f32::from_bits(MAX_ABS_FEATURE.to_bits() + 1);
    let midpoint = (f64::from(MAX_ABS_FEATURE) + f64::from(next)) / 2.0;
    (midpoint, MAX_ABS_FEATURE.to_bits().is_multiple_of(2))
}

/// One feature's schema.
fn feature() -> Value {
    let (bound, inclusive) = feature_bound();
    if inclusive {
        json!({"type": "number", "minimum": -bound, "maximum": bound})
    } else {
        json!({"type": "number", "exclusiveMinimum": -bound, "exclusiveMaximum": bound})
    }
}

/// A batch of `item`s: 1 to `http.max_batch_samples`.
fn batch(item: Value, limits: Limits) -> Value {
    json!({
        "type": "array",
        "description": format!(
            "1 to {} samples (`http.max_batch_samples`): all taken, or none.",
            limits.max_batch_samples
        ),
        "minItems": 1,
        "maxItems": limits.max_batch_samples,
        "items": item,
    })
}

/// The request schemas, by name, for `limits`.
fn request_schemas(limits: Limits) -> Vec<(&'static str, Value)> {
    let Limits {
        inputs,
        classes,
        max_batch_samples,
    } = limits;
    let features = schema_ref("Features");
    let label = schema_ref("Label");
    let id = schema_ref("SampleId");
    let examples = Examples::new(limits);
    let infer_input = {
        let (flat, nested) = (
            json!({"type": "array", "items": feature()}),
            json!({"type": "array", "items": {"type": "array", "minItems": inputs, "maxItems": inputs, "items": feature()}}),
        );
        // The row count of `shape` (or -1) must agree with the data's: one branch per count.
        let rows: Vec<Value> = (1..=max_batch_samples)
            .map(|n| {
                json!({"properties": {
                    "shape": {"enum": [[n, inputs], [-1, inputs]]},
                    "data": {"anyOf": [
                        {"minItems": n * inputs, "maxItems": n * inputs, "items": {"type": "number"}},
                        {"minItems": n, "maxItems": n, "items": {"type": "array"}},
                    ]},
                }})
            })
            .collect();
        let mut schema = object(
            &["name", "shape", "datatype", "data"],
            json!({
                "name": {"type": "string", "enum": [crate::service::http::v2::INPUT_FEATURES]},
                "shape": {
                    "type": "array",
                    "description": format!("`[N, {inputs}]`: N rows (1 to {max_batch_samples}, `http.max_batch_samples`), or -1 for as many as `data` holds."),
                    "minItems": 2, "maxItems": 2, "items": {"type": "integer"},
                },
                "datatype": {"type": "string", "enum": ["FP32", "FP64"], "description": "FP64 is narrowed to FP32."},
                "parameters": or_null(json!({
                    "type": "object",
                    "description": "Ignored, except `binary_data_size`: with Triton's binary tensor extension (the `Inference-Header-Content-Length` header), the input's bytes follow the JSON and this gives their length instead of `data`. That form is not JSON and is not described by this schema.",
                    "not": {"required": ["binary_data_size"]},
                })),
                "data": {
                    "description": format!("N × {inputs} finite numbers within ±1e15, flat in row-major order or as N rows of {inputs}."),
                    "anyOf": [flat, nested],
                },
            }),
        );
        schema["anyOf"] = Value::Array(rows);
        schema
    };
    let output_names = [
        crate::service::http::v2::OUTPUT_LABEL,
        crate::service::http::v2::OUTPUT_PROBABILITIES,
    ];
    let has_output = |name: &str| json!({"contains": {"type": "object", "properties": {"name": {"const": name}}}});
    vec![
        (
            "Features",
            json!({
                "type": "array",
                "description": format!(
                    "Exactly {inputs} finite numbers (`network.inputs`), each within ±1e15 (as 32-bit floats)."
                ),
                "minItems": inputs,
                "maxItems": inputs,
                "items": feature(),
                "examples": [examples.features(0)],
            }),
        ),
        (
            "Label",
            json!({
                "type": "integer",
                "description": format!("The class: 0 to {} (`network.classes` − 1).", classes.saturating_sub(1)),
                "minimum": 0,
                "maximum": classes.saturating_sub(1),
                "examples": [examples.label(0)],
            }),
        ),
        (
            "SampleId",
            json!({
                "type": "string",
                "description": format!("A delayed label's id: 1 to {MAX_ID_CHARS} characters."),
                "minLength": 1,
                "maxLength": MAX_ID_CHARS,
                "examples": ["req-42"],
            }),
        ),
        (
            "LearnRequest",
            json!({
                "description": "One sample `{features, label}`, one delayed label `{id, label}` (for features an earlier `/classify` kept under `id`), or a batch `{samples}`. A field sent as `null` counts as absent.",
                "oneOf": [
                    object(&["features", "label"], json!({"features": features, "label": label, "id": absent(), "samples": absent()})),
                    object(&["id", "label"], json!({"id": id, "label": label, "features": absent(), "samples": absent()})),
                    object(&["samples"], json!({"samples": batch(schema_ref("LearnSample"), limits), "features": absent(), "id": absent(), "label": absent()})),
                ],
            }),
        ),
        (
            "LearnSample",
            json!({
                "description": "One sample of a batch, or one NDJSON line: `{features, label}` or `{id, label}`.",
                "oneOf": [
                    object(&["features", "label"], json!({"features": features, "label": label, "id": absent()})),
                    object(&["id", "label"], json!({"id": id, "label": label, "features": absent()})),
                ],
            }),
        ),
        (
            "ClassifyRequest",
            json!({
                "description": "One sample `{features, id?}` (with an `id`, the features are kept for a delayed label), or a batch `{samples}`. A field sent as `null` counts as absent.",
                "oneOf": [
                    object(&["features"], json!({"features": features, "id": or_null(id.clone()), "samples": absent()})),
                    object(&["samples"], json!({"samples": batch(schema_ref("ClassifyItem"), limits), "features": absent(), "id": absent()})),
                ],
            }),
        ),
        (
            "ClassifyItem",
            object(
                &["features"],
                json!({"features": features, "id": or_null(id)}),
            ),
        ),
        ("InferInput", infer_input),
        (
            "RequestedOutput",
            object(
                &["name"],
                json!({
                    "name": {"type": "string", "enum": output_names},
                    "parameters": or_null(json!({
                        "type": "object",
                        "description": "`binary_data: true` returns the output as little-endian bytes after the JSON; other parameters are ignored.",
                        "properties": {"binary_data": {"type": "boolean"}},
                    })),
                }),
            ),
        ),
        (
            "InferRequest",
            object(
                &["inputs"],
                json!({
                    "id": or_null(json!({"type": "string", "description": "Echoed in the response."})),
                    "parameters": or_null(json!({
                        "type": "object",
                        "description": "`binary_data_output: true` returns every output as binary unless the output says otherwise; other parameters are ignored.",
                        "properties": {"binary_data_output": {"type": "boolean"}},
                    })),
                    "inputs": {"type": "array", "description": "Exactly one tensor, `features`.", "minItems": 1, "maxItems": 1, "items": schema_ref("InferInput")},
                    "outputs": or_null(json!({
                        "type": "array",
                        "description": "The outputs wanted, each once, in this order; both when absent.",
                        "items": schema_ref("RequestedOutput"),
                        "minItems": 1,
                        "maxItems": 2,
                        "anyOf": [
                            {"maxItems": 1},
                            {"allOf": [has_output(output_names[0]), has_output(output_names[1])]},
                        ],
                    })),
                }),
            ),
        ),
    ]
}

/// Request examples built with the configured sizes.
struct Examples {
    limits: Limits,
}

impl Examples {
    fn new(limits: Limits) -> Self {
        Self { limits }
    }

    /// Sample `k`'s features: a ramp, shifted by `k`.
    fn features(&self, k: usize) -> Value {
        let d = self.limits.inputs;
        let values: Vec<f64> = (0..d).map(|i| ((i + k) % 5) as f64 * 0.25).collect();
        json!(values)
    }

    /// Sample `k`'s label.
    fn label(&self, k: usize) -> Value {
        json!((3 + 4 * k) % self.limits.classes.max(1))
    }

    fn sample(&self, k: usize) -> Value {
        json!({"features": self.features(k), "label": self.label(k)})
    }

    /// A batch of two, or one when batches hold one sample.
    fn batch_size(&self) -> usize {
        self.limits.max_batch_samples.clamp(1, 2)
    }

    fn learn(&self) -> Vec<(&'static str, Value)> {
        let samples: Vec<Value> = (0..self.batch_size()).map(|k| self.sample(k)).collect();
        vec![
            ("sample", self.sample(0)),
            (
                "delayed label",
                json!({"id": "req-42", "label": self.label(0)}),
            ),
            ("batch", json!({"samples": samples})),
        ]
    }

    fn learn_line(&self) -> Value {
        self.sample(0)
    }

    fn classify(&self) -> Vec<(&'static str, Value)> {
        let samples: Vec<Value> = (0..self.batch_size())
            .map(|k| json!({"features": self.features(k)}))
            .collect();
        vec![
            ("sample", json!({"features": self.features(0)})),
            (
                "keep for a delayed label",
                json!({"features": self.features(0), "id": "req-42"}),
            ),
            ("batch", json!({"samples": samples})),
        ]
    }

    fn infer(&self) -> Vec<(&'static str, Value)> {
        let n = self.batch_size();
        let d = self.limits.inputs;
        let rows: Vec<Value> = (0..n).map(|k| self.features(k)).collect();
        let flat: Vec<Value> = rows
            .iter()
            .flat_map(|r| r.as_array().cloned().unwrap_or_default())
            .collect();
        vec![
            (
                "nested, one output",
                json!({"id": "r1", "inputs": [{"name": "features", "shape": [n, d], "datatype": "FP32", "data": rows}],
                    "outputs": [{"name": "label"}]}),
            ),
            (
                "flat, both outputs",
                json!({"inputs": [{"name": "features", "shape": [-1, d], "datatype": "FP32", "data": flat}]}),
            ),
        ]
    }
}

/// Replaces the named examples of `path`'s POST body of `content_type`.
fn set_request_examples(
    document: &mut Value,
    path: &str,
    content_type: &str,
    examples: Vec<(&'static str, Value)>,
) {
    let Some(content) = at(
        document,
        &[
            "paths",
            path,
            "post",
            "requestBody",
            "content",
            content_type,
        ],
    )
    .and_then(Value::as_object_mut) else {
        return;
    };
    content.remove("example");
    let examples: Map<String, Value> = examples
        .into_iter()
        .map(|(name, value)| (name.to_owned(), json!({ "value": value })))
        .collect();
    content.insert("examples".into(), Value::Object(examples));
}

/// Replaces the example of `/learn`'s NDJSON body (one line).
fn set_ndjson_example(document: &mut Value, line: Value) {
    let content = at(
        document,
        &["paths", "/learn", "post", "requestBody", "content", NDJSON],
    );
    if let Some(content) = content.and_then(Value::as_object_mut) {
        content.insert("example".into(), line);
    }
}
