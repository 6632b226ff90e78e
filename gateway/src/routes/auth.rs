//! Sign-up, sign-in and the caller's profile, in the tutorials' JSON shapes.

use axum::{extract::State, http::header, response::IntoResponse};
use proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};
use token::Role;

use crate::{
    backend::Safety::{Idempotent, Once},
    error::ApiError,
    extract::{Caller, Json},
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
    token_type: String,
    expires_in: i64,
}

pub async fn sign_in(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<SignIn>,
) -> Result<impl IntoResponse, ApiError> {
    let message = pb::SignInRequest {
        login: body.username,
        password: body.password,
    };
    // Signing in changes nothing a retry could duplicate (a second token is harmless).
    let response = state
        .auth
        .rpc(&caller.public(), Idempotent, AuthClient::sign_in, message)
        .await?;
    let user = response.user.ok_or_else(missing("user"))?;
    // The answer carries a token: no browser or proxy cache may keep it.
    let no_store = [(header::CACHE_CONTROL, "no-store")];
    Ok((
        no_store,
        axum::Json(SignedIn {
            id: user.id,
            username: user.username,
            email: user.email,
            roles: tutorial_roles(&user.roles),
            access_token: response.access_token,
            token_type: if response.token_type.is_empty() {
                "Bearer".to_owned()
            } else {
                response.token_type
            },
            expires_in: response.expires_in,
        }),
    ))
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
}

impl From<pb::User> for User {
    fn from(user: pb::User) -> Self {
        Self {
            roles: tutorial_roles(&user.roles),
            created_at: user.created_at.and_then(|t| {
                std::time::SystemTime::try_from(t)
                    .ok()
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            }),
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

pub fn missing(field: &'static str) -> impl FnOnce() -> ApiError {
    move || {
        tracing::error!(field, "backend response lacks a required field");
        ApiError::internal()
    }
}
