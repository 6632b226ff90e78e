//! Sign-up, sign-in, the caller's profile and password, in the tutorials' JSON shapes.

use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::IntoResponse,
};
use proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};
use token::Role;

use crate::{
    backend::Safety::{Idempotent, Once},
    error::ApiError,
    extract::{Caller, Json, UserAgent},
    refresh_cookie::RefreshCookie,
    rpc::AuthClient,
    state::AppState,
};

#[derive(Deserialize)]
pub struct SignUp {
    username: String,
    email: String,
    password: String,
    /// `["user", "moderator"]` or the tutorials' `["ROLE_MODERATOR"]`; beyond `user` only an
    /// admin's token may ask.
    #[serde(default)]
    roles: Option<Vec<String>>,
}

#[derive(Serialize)]
pub struct Message {
    message: String,
}

pub async fn sign_up(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<SignUp>,
) -> Result<axum::Json<Message>, ApiError> {
    let roles = parse_roles(body.roles.unwrap_or_default())?;
    let outgoing = caller.outgoing()?;
    let message = pb::SignUpRequest {
        username: body.username,
        email: body.email,
        password: body.password,
        roles,
    };
    state
        .auth
        .rpc(&outgoing, Once, AuthClient::sign_up, message)
        .await?;
    Ok(axum::Json(Message {
        message: "User was registered successfully!".to_owned(),
    }))
}

/// Role names as the services spell them; an unknown name is the caller's mistake.
pub fn parse_roles(names: Vec<String>) -> Result<Vec<String>, ApiError> {
    names
        .iter()
        .map(|name| {
            name.parse::<Role>()
                .map(|role| role.as_str().to_owned())
                .map_err(|e| ApiError::bad_request(e.to_string()))
        })
        .collect()
}

#[derive(Deserialize)]
pub struct SignIn {
    /// A username or an email address.
    username: String,
    password: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedIn {
    id: String,
    username: String,
    email: String,
    roles: Vec<String>,
    access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    token_type: String,
    expires_in: i64,
}

/// The refresh token goes in the refresh cookie, and in the body too unless the request comes
/// from a page that may spend the cookie (its `Origin` is the gateway's own or a cookie origin):
/// apps and other clients keep it themselves, while a page's scripts never see it.
pub async fn sign_in(
    State(state): State<AppState>,
    caller: Caller,
    cookie: RefreshCookie,
    user_agent: UserAgent,
    Json(body): Json<SignIn>,
) -> Result<impl IntoResponse, ApiError> {
    let message = pb::SignInRequest {
        login: body.username,
        password: body.password,
    };
    let outgoing = caller.public().with_user_agent(&user_agent);
    // A retry after a lost answer can leave one more session, never used, which ends at its idle
    // limit (or the per-user cap): harmless, and better than a failed sign-in.
    let response = state
        .auth
        .rpc(&outgoing, Idempotent, AuthClient::sign_in, message)
        .await?;
    let user = response.user.ok_or_else(missing("user"))?;
    // An auth-service older than sessions issues no refresh token; signing in still works.
    let refresh_token = Some(response.refresh_token).filter(|t| !t.is_empty());
    let mut headers = HeaderMap::new();
    // The answer carries tokens: no browser or proxy cache may keep it.
    headers.insert(header::CACHE_CONTROL, NO_STORE);
    if let Some(token) = &refresh_token {
        let set_cookie = cookie.set(token, response.refresh_expires_at)?;
        headers.insert(header::SET_COOKIE, set_cookie);
    }
    Ok((
        headers,
        axum::Json(SignedIn {
            id: user.id,
            username: user.username,
            email: user.email,
            roles: tutorial_roles(&user.roles),
            access_token: response.access_token,
            refresh_token: refresh_token.filter(|_| !cookie.for_cookie_page()),
            token_type: token_type(response.token_type),
            expires_in: response.expires_in,
        }),
    ))
}

/// `Cache-Control` of every answer that carries a token.
pub const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// auth-service says "Bearer"; an older one said nothing.
pub fn token_type(given: String) -> String {
    if given.is_empty() {
        "Bearer".to_owned()
    } else {
        given
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Ends every other session of the caller (auth-service does); this one stays signed in.
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    let outgoing = caller.outgoing()?;
    let message = pb::ChangePasswordRequest {
        current_password: body.current_password,
        new_password: body.new_password,
    };
    // A retry after a lost answer would present a current password that no longer is.
    state
        .auth
        .rpc(&outgoing, Once, AuthClient::change_password, message)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    id: String,
    username: String,
    email: String,
    roles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    /// A disabled account cannot sign in or refresh.
    disabled: bool,
}

impl From<pb::User> for User {
    fn from(user: pb::User) -> Self {
        Self {
            roles: tutorial_roles(&user.roles),
            created_at: rfc3339(user.created_at),
            disabled: user.disabled,
            id: user.id,
            username: user.username,
            email: user.email,
        }
    }
}

pub async fn me(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<User>, ApiError> {
    Ok(axum::Json(current_user(&state, &caller).await?.into()))
}

/// The caller's account, as auth-service sees it after verifying the token.
pub async fn current_user(state: &AppState, caller: &Caller) -> Result<pb::User, ApiError> {
    let outgoing = caller.outgoing()?;
    let message = pb::GetMeRequest {};
    let response = state
        .auth
        .rpc(&outgoing, Idempotent, AuthClient::get_me, message)
        .await?;
    response.user.ok_or_else(missing("user"))
}

/// `user` → `ROLE_USER`, the spelling the tutorials' clients expect.
pub fn tutorial_roles(roles: &[String]) -> Vec<String> {
    roles
        .iter()
        .map(|r| match r.parse::<Role>() {
            Ok(role) => format!("ROLE_{}", role.as_str().to_ascii_uppercase()),
            Err(_) => format!("ROLE_{}", r.to_ascii_uppercase()),
        })
        .collect()
}

/// A protobuf time as the API writes times: RFC 3339, whole seconds, UTC.
pub fn rfc3339(time: Option<prost_types::Timestamp>) -> Option<String> {
    time.and_then(|t| std::time::SystemTime::try_from(t).ok())
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
}

pub fn missing(field: &'static str) -> impl FnOnce() -> ApiError {
    move || {
        tracing::error!(field, "backend response lacks a required field");
        ApiError::internal()
    }
}
