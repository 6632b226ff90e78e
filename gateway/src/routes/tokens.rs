//! What follows a sign-in: refreshing (a body token for clients that keep it, the cookie for the
//! web page), signing out, and asking whether a token is active.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{
    backend::Safety::Idempotent,
    error::ApiError,
    extract::{Caller, Json, OptionalJson, UserAgent},
    refresh_cookie::RefreshCookie,
    rpc::AuthClient,
    state::AppState,
};

use super::auth::{NO_STORE, missing, token_type};

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshBody {
    refresh_token: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refreshed {
    access_token: String,
    /// Only to a refresh that came in the body; the cookie's successor goes back as a cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    token_type: String,
    expires_in: i64,
}

/// A body token wins over the cookie. The cookie is spent only from an allowed origin, and a
/// refused one is cleared so the page stops offering it.
pub async fn refresh(
    State(state): State<AppState>,
    caller: Caller,
    cookie: RefreshCookie,
    user_agent: UserAgent,
    OptionalJson(body): OptionalJson<RefreshBody>,
) -> Result<Response, ApiError> {
    let (token, by_cookie) = match body.refresh_token.filter(|t| !t.is_empty()) {
        Some(token) => (token, false),
        None => match cookie.spend()? {
            Some(token) => (token.to_owned(), true),
            None => return Err(ApiError::unauthenticated("no refresh token", false)),
        },
    };
    let outgoing = caller.public().with_user_agent(&user_agent);
    let message = pb::RefreshRequest {
        refresh_token: token,
    };
    // A retry of the same token within auth-service's grace window answers the same new pair,
    // so retrying after a lost answer is safe.
    let result = state
        .auth
        .rpc(&outgoing, Idempotent, AuthClient::refresh, message)
        .await;
    let response = match result {
        Ok(response) => response,
        Err(error) if by_cookie && error.status == StatusCode::UNAUTHORIZED => {
            let mut response = error.into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, cookie.clear());
            return Ok(response);
        }
        Err(error) => return Err(error),
    };
    if response.refresh_token.is_empty() {
        return Err(missing("refresh_token")());
    }
    let mut headers = vec![(header::CACHE_CONTROL, NO_STORE)];
    let refresh_token = if by_cookie {
        headers.push((
            header::SET_COOKIE,
            cookie.set(&response.refresh_token, response.refresh_expires_at)?,
        ));
        None
    } else {
        Some(response.refresh_token)
    };
    let body = Refreshed {
        access_token: response.access_token,
        refresh_token,
        token_type: token_type(response.token_type),
        expires_in: response.expires_in,
    };
    let mut response = axum::Json(body).into_response();
    response.headers_mut().extend(headers);
    Ok(response)
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignOutBody {
    /// End every session of the user, not only this one.
    #[serde(default)]
    all: bool,
    refresh_token: Option<String>,
}

/// Ends the session named by each credential the caller gives: the access token (expired is
/// fine) and the refresh token (body, else the cookie). Usually both name the same session; when
/// they do not (a cookie left by a later sign-in), both end, which is what signing out means.
/// 204: a token that names no live session means there is nothing left to end. An unreachable
/// auth-service is an error, since then a session may live on, and so is a service account's
/// token (403): it names no session and stays valid, which a 204 would hide from a caller that
/// meant to revoke it.
///
/// The cookie is cleared only for a page that may spend it: a foreign page cannot end the
/// browser's session by clearing it (logout CSRF), just as it cannot spend it.
pub async fn sign_out(
    State(state): State<AppState>,
    caller: Caller,
    cookie: RefreshCookie,
    OptionalJson(body): OptionalJson<SignOutBody>,
) -> Result<Response, ApiError> {
    let refresh_token = body
        .refresh_token
        .filter(|t| !t.is_empty())
        .or_else(|| cookie.spendable().map(str::to_owned));
    let mut calls = Vec::new();
    if let Some(token) = refresh_token {
        calls.push((caller.public(), Some(token)));
    }
    // An unreadable token header names no session.
    if let Some(outgoing) = caller.outgoing().ok().filter(|_| caller.has_token()) {
        calls.push((outgoing, None));
    }
    let mut refused = None;
    for (outgoing, refresh_token) in calls {
        let message = pb::SignOutRequest {
            refresh_token,
            all: body.all,
        };
        let result = state
            .auth
            .rpc(&outgoing, Idempotent, AuthClient::sign_out, message)
            .await;
        match result {
            Ok(_) => {}
            Err(error) if is_nothing_to_end(&error) => {}
            // The other credential's session still ends, and with it the cookie's.
            Err(error) if error.status == StatusCode::FORBIDDEN => refused = Some(error),
            Err(error) => return Err(error),
        }
    }
    let mut response = match refused {
        Some(error) => error.into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    };
    if cookie.may_clear() {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, cookie.clear());
    }
    Ok(response)
}

/// Refusals that mean the token names no live session.
fn is_nothing_to_end(error: &ApiError) -> bool {
    matches!(
        error.status,
        StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST
    )
}

#[derive(Deserialize)]
pub struct Introspect {
    token: String,
}

/// RFC 7662's answer: the token's claims when active, `{"active": false}` alone otherwise.
#[derive(Serialize)]
pub struct Introspection {
    active: bool,
    #[serde(flatten)]
    claims: Option<Claims>,
}

#[derive(Serialize)]
pub struct Claims {
    sub: String,
    username: String,
    roles: Vec<String>,
    iss: String,
    aud: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    sid: String,
    token_type: String,
    /// A service account's token: its client id.
    #[serde(skip_serializing_if = "String::is_empty")]
    client_id: String,
}

pub async fn introspect(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<Introspect>,
) -> Result<impl IntoResponse, ApiError> {
    let outgoing = caller.outgoing()?;
    let message = pb::ValidateTokenRequest { token: body.token };
    let response = state
        .auth
        .rpc(&outgoing, Idempotent, AuthClient::validate_token, message)
        .await?;
    let claims = response.active.then(|| Claims {
        sub: response.sub,
        username: response.username,
        roles: response.roles,
        iss: response.iss,
        aud: response.aud,
        iat: response.iat,
        nbf: response.nbf,
        exp: response.exp,
        jti: response.jti,
        sid: response.sid,
        token_type: token_type(response.token_type),
        client_id: response.client_id,
    });
    // The answer describes a credential: not for caches either.
    Ok((
        [(header::CACHE_CONTROL, NO_STORE)],
        axum::Json(Introspection {
            active: response.active,
            claims,
        }),
    ))
}
