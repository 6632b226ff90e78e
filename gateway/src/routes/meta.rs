//! What is not the persons API: the public keys, liveness, readiness and the API's description.

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use proto::auth::v1 as pb;
use serde_json::json;

use crate::{
    backend::{Backend, ReplicaState, Safety::Idempotent},
    error::ApiError,
    extract::Caller,
    rpc::AuthClient,
    state::AppState,
};

/// Used when auth-service does not say how long its key set may be cached.
const DEFAULT_JWKS_MAX_AGE: i64 = 300;

pub async fn jwks(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let message = pb::GetJwksRequest {};
    let response = state
        .auth
        .rpc(&caller.public(), Idempotent, AuthClient::get_jwks, message)
        .await?;
    let keys = response
        .keys
        .into_iter()
        .map(authn::jwk_from_proto)
        .collect();
    let max_age = if response.max_age_seconds > 0 {
        response.max_age_seconds
    } else {
        DEFAULT_JWKS_MAX_AGE
    };
    let cache_control = HeaderValue::from_str(&format!("public, max-age={max_age}"))
        .map_err(|_| ApiError::internal())?;
    Ok((
        [(header::CACHE_CONTROL, cache_control)],
        axum::Json(token::JwkSet { keys }),
    )
        .into_response())
}

/// Live: the process answers. Says nothing about the backends, so a backend outage never makes
/// Kubernetes restart every gateway.
pub async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "status": "ok" }))
}

/// Ready: each backend has a replica that passed its last grpc.health.v1 check.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let ready = state.auth.is_ready() && state.resource.is_ready();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "backends": {
            "auth": summary(&state.auth),
            "resource": summary(&state.resource),
        },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(body),
    )
        .into_response()
}

/// Counts only: replica addresses are internal.
fn summary(backend: &Backend) -> serde_json::Value {
    let replicas = backend.replicas();
    let up = replicas
        .iter()
        .filter(|r| r.state() == ReplicaState::Up)
        .count();
    json!({ "replicas": replicas.len(), "up": up })
}

pub const OPENAPI: &str = include_str!("../../openapi.json");

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
