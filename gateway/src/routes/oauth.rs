//! OAuth 2.0 for internal services: the client-credentials grant (RFC 6749 §4.4), token
//! introspection (RFC 7662) and the authorization server's metadata (RFC 8414), so a stock OAuth
//! client library finds the endpoints and uses them. auth-service checks the client's secret;
//! the gateway reads the form, the client authentication and answers in OAuth's shapes
//! ([`crate::oauth`]).

use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use proto::auth::v1 as pb;
use serde::Serialize;
use serde_json::json;
use token::Role;

use crate::{
    backend::Safety::Idempotent,
    extract::Caller,
    oauth::{ClientCredentials, Form, OAuthError, check_scope},
    rpc::AuthClient,
    state::AppState,
};

use super::auth::token_type;

pub const TOKEN_PATH: &str = "/oauth/token";
pub const INTROSPECT_PATH: &str = "/oauth/introspect";
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// RFC 6749 §5.1.
#[derive(Serialize)]
pub struct Token {
    access_token: String,
    token_type: String,
    expires_in: i64,
    /// The roles granted, space-separated.
    scope: String,
}

/// The client-credentials grant: a service account's id and secret for an access token.
pub async fn token(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    form: Form,
) -> Result<axum::Json<Token>, OAuthError> {
    let grant_type = form
        .get("grant_type")?
        .ok_or_else(|| OAuthError::invalid_request("grant_type is missing"))?;
    if grant_type != "client_credentials" {
        return Err(OAuthError::unsupported_grant_type(format!(
            "grant_type {grant_type} is not supported; only client_credentials is"
        )));
    }
    let client = ClientCredentials::from_request(&headers, &form)?;
    let scope = form.get("scope")?.unwrap_or_default();
    if !scope.is_empty() {
        check_scope(scope)?;
    }
    let message = pb::IssueClientTokenRequest {
        client_id: client.id.clone(),
        client_secret: client.secret(),
        scope: scope.to_owned(),
    };
    // Asking again after a lost answer issues one more short-lived token: harmless.
    let response = state
        .auth
        .rpc(
            &caller.public(),
            Idempotent,
            AuthClient::issue_client_token,
            message,
        )
        .await
        .map_err(|e| OAuthError::from_api(e, client.used_basic()))?;
    Ok(axum::Json(Token {
        access_token: response.access_token,
        token_type: token_type(response.token_type),
        expires_in: response.expires_in,
        scope: response.scope,
    }))
}

/// RFC 7662 §2.2: `{"active": false}` alone for anything not active.
#[derive(Serialize)]
pub struct Introspection {
    active: bool,
    #[serde(flatten)]
    claims: Option<Claims>,
}

#[derive(Serialize)]
pub struct Claims {
    /// The token's roles, space-separated.
    scope: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    client_id: String,
    username: String,
    token_type: String,
    exp: i64,
    iat: i64,
    nbf: i64,
    sub: String,
    aud: String,
    iss: String,
    jti: String,
}

/// Whether a token is active, for a caller that authenticates as a service account. The
/// `token_type_hint` is read (a repeated one is refused) and ignored: every token is an access
/// token.
pub async fn introspect(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    form: Form,
) -> Result<axum::Json<Introspection>, OAuthError> {
    let client = ClientCredentials::from_request(&headers, &form)?;
    let token = form
        .get("token")?
        .ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
    form.get("token_type_hint")?;
    let message = pb::IntrospectTokenRequest {
        client_id: client.id.clone(),
        client_secret: client.secret(),
        token: token.to_owned(),
    };
    let response = state
        .auth
        .rpc(
            &caller.public(),
            Idempotent,
            AuthClient::introspect_token,
            message,
        )
        .await
        .map_err(|e| OAuthError::from_api(e, client.used_basic()))?;
    let claims = response.active.then(|| Claims {
        scope: response.roles.join(" "),
        client_id: response.client_id,
        username: response.username,
        token_type: token_type(response.token_type),
        exp: response.exp,
        iat: response.iat,
        nbf: response.nbf,
        sub: response.sub,
        aud: response.aud,
        iss: response.iss,
        jti: response.jti,
    });
    Ok(axum::Json(Introspection {
        active: response.active,
        claims,
    }))
}

/// Clients may cache the metadata for a while: it changes only with the gateway's configuration.
const METADATA_CACHE_CONTROL: HeaderValue = HeaderValue::from_static("public, max-age=300");

/// RFC 8414's authorization server metadata. Only what exists is advertised: there is no
/// authorization endpoint (so no response types), no revocation endpoint.
pub async fn metadata(State(state): State<AppState>) -> Response {
    let issuer = &state.settings.token_issuer;
    let base = issuer.trim_end_matches('/');
    let auth_methods = ["client_secret_basic", "client_secret_post"];
    // A service account never holds admin.
    let scopes: Vec<&str> = Role::ALL
        .iter()
        .filter(|r| **r != Role::Admin)
        .map(|r| r.as_str())
        .collect();
    let document = json!({
        "issuer": issuer,
        "token_endpoint": format!("{base}{TOKEN_PATH}"),
        "token_endpoint_auth_methods_supported": auth_methods,
        "jwks_uri": format!("{base}{JWKS_PATH}"),
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": [],
        "scopes_supported": scopes,
        "introspection_endpoint": format!("{base}{INTROSPECT_PATH}"),
        "introspection_endpoint_auth_methods_supported": auth_methods,
    });
    (
        [(header::CACHE_CONTROL, METADATA_CACHE_CONTROL)],
        axum::Json(document),
    )
        .into_response()
}
