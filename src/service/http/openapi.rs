//! `GET /openapi.json`: the OpenAPI 3.1 document of the whole HTTP API. It is generated from
//! the handlers' `#[utoipa::path]` annotations and the `ToSchema` types where the request and
//! response bodies are defined, by the same route table that builds the router
//! ([`super::api`]), so it lists exactly the routes served.

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::Extension;
use utoipa::OpenApi;

use crate::service::http::error::ErrorCode;
use crate::service::http::extract::JSON;
use crate::service::http::guard::Guard;

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
    pub fn new(document: &utoipa::openapi::OpenApi) -> Self {
        // Serialising a document of plain strings, maps and numbers cannot fail; an empty
        // object would show it did.
        let mut text = document
            .to_pretty_json()
            .unwrap_or_else(|_| "{}".to_owned());
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
    let mut refusals = vec![ErrorCode::Unauthorized, ErrorCode::Forbidden];
    if limited {
        refusals.push(ErrorCode::Overloaded);
    }
    for item in document.paths.paths.values_mut() {
        for operation in operations(item) {
            operation.security = Some(security.clone());
            for code in &refusals {
                operation
                    .responses
                    .responses
                    .entry(code.status().as_str().to_owned())
                    .or_insert_with(|| error_response(schema, code.description()).into());
            }
        }
    }
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
                    .is_some_and(
                        |s| matches!(s, RefOr::Ref(r) if r.ref_location.ends_with("/ErrorBody")),
                    );
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
