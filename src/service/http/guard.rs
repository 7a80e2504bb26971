//! The route guards: bearer-token checks, one [`Guard`] per route group, run before the handler
//! reads the body: a refused request costs a header lookup and a hash, and learns nothing. More
//! than one `Authorization` header → 400 on every guarded route; no credentials → 401 with
//! `WWW-Authenticate: Bearer`; credentials that do not grant the route → 403. The refusal is an [`ApiError`]; a router that answers errors in another shape (`/v2`)
//! re-renders it, so this module knows no route. The presented token is never logged or
//! echoed. (The tokens themselves live in `service::auth`.)

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::service::auth::{Token, LEARN_TOKEN_FILE_VAR, LEARN_TOKEN_VAR};
use crate::service::http::error::ApiError;
use crate::service::http::AppState;

/// What a route group requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// `/learn`: the learn token, when one is set.
    Learn,
    /// `/admin/*`: the learn token, always; refused while none is set.
    Admin,
    /// `/classify`, `/v1/model`, the v2 model routes: the read or the learn token, when a read
    /// token is set.
    Read,
    /// `/metrics`, the status page and its data: open unless `auth.metrics_open = false`, then
    /// the read or the learn token.
    Metrics,
    /// `/healthz`, `/readyz`, `/v2/health/*`: open unless `auth.health_open = false`, then as
    /// `Metrics`.
    Health,
}

/// The middleware: passes the request on if `guard` lets it through, else answers 401 or 403.
pub async fn require(
    State((state, guard)): State<(Arc<AppState>, Guard)>,
    req: Request,
    next: Next,
) -> Response {
    match check(&state, guard, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// Whether `headers` satisfy `guard` under the state's tokens and `[auth]` settings.
pub fn check(state: &AppState, guard: Guard, headers: &HeaderMap) -> Result<(), ApiError> {
    // Whether or not the route needs a token: with two headers, a proxy and the service could
    // each read a different one.
    if headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(ApiError::DuplicateAuthorization);
    }
    let tokens = &state.access;
    let readers = || [tokens.read.as_ref(), tokens.learn.as_ref()];
    match guard {
        Guard::Learn => match &tokens.learn {
            None => Ok(()),
            Some(learn) => verify(headers, [Some(learn), None]),
        },
        Guard::Admin => match &tokens.learn {
            None => Err(ApiError::Forbidden(format!(
                "the admin routes need a learn token and none is set; start the service with \
                 {LEARN_TOKEN_VAR} or {LEARN_TOKEN_FILE_VAR} and send it as \
                 `Authorization: Bearer <token>`"
            ))),
            Some(learn) => verify(headers, [Some(learn), None]),
        },
        Guard::Read if tokens.read.is_none() => Ok(()),
        Guard::Metrics if state.config.auth.metrics_open => Ok(()),
        Guard::Health if state.config.auth.health_open => Ok(()),
        Guard::Read | Guard::Metrics | Guard::Health => verify(headers, readers()),
    }
}

/// 401 unless `headers` carry a bearer token; 403 unless it is one of `accepted`.
fn verify(headers: &HeaderMap, accepted: [Option<&Token>; 2]) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(
            "this route needs a token: send `Authorization: Bearer <token>`".into(),
        ));
    };
    let bytes = value.as_bytes();
    let scheme = b"bearer ";
    if bytes.len() <= scheme.len() || !bytes[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return Err(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`".into(),
        ));
    }
    let presented = bytes[scheme.len()..].trim_ascii();
    // Every accepted token is compared, so timing does not tell which one (if any) matched.
    let granted = accepted
        .iter()
        .flatten()
        .fold(false, |ok, token| token.matches(presented) | ok);
    if granted {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "the token does not grant access to this route".into(),
        ))
    }
}
