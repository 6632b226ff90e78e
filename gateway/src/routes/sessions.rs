//! Sessions (one per sign-in): the caller's own, and for admins anyone's. auth-service decides
//! who may see or end which.

use axum::{extract::State, http::StatusCode};
use proto::auth::v1 as pb;
use serde::Serialize;

use crate::{
    backend::Safety::Idempotent,
    error::ApiError,
    extract::{Caller, Path, Uuid},
    rpc::AuthClient,
    state::AppState,
};

use super::auth::rfc3339;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    id: String,
    /// Where the session was last used from.
    client_address: String,
    user_agent: String,
    created_at: Option<String>,
    last_used_at: Option<String>,
    /// The session of the caller's own token.
    current: bool,
}

impl From<pb::Session> for Session {
    fn from(s: pb::Session) -> Self {
        Self {
            id: s.id,
            client_address: s.client_address,
            user_agent: s.user_agent,
            created_at: rfc3339(s.created_at),
            last_used_at: rfc3339(s.last_used_at),
            current: s.current,
        }
    }
}

#[derive(Serialize)]
pub struct Sessions {
    /// Most recently used first.
    sessions: Vec<Session>,
}

pub async fn mine(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Sessions>, ApiError> {
    list(&state, &caller, String::new()).await.map(axum::Json)
}

pub async fn end_mine(
    State(state): State<AppState>,
    caller: Caller,
    Path(Uuid(id)): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    end(&state, &caller, String::new(), id).await
}

pub async fn of_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(Uuid(user_id)): Path<Uuid>,
) -> Result<axum::Json<Sessions>, ApiError> {
    list(&state, &caller, user_id).await.map(axum::Json)
}

/// One session of a user, from the list (auth-service has no call for a single one).
pub async fn one_of_user(
    State(state): State<AppState>,
    caller: Caller,
    Path((Uuid(user_id), Uuid(session_id))): Path<(Uuid, Uuid)>,
) -> Result<axum::Json<Session>, ApiError> {
    list(&state, &caller, user_id)
        .await?
        .sessions
        .into_iter()
        .find(|s| s.id == session_id)
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found("no such session"))
}

pub async fn end_of_user(
    State(state): State<AppState>,
    caller: Caller,
    Path((Uuid(user_id), Uuid(session_id))): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    end(&state, &caller, user_id, session_id).await
}

/// Every session of the user, one by one: auth-service has no single call for it. A session
/// started meanwhile survives; disabling the account is the way to shut a user out.
pub async fn end_all_of_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(Uuid(user_id)): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let sessions = list(&state, &caller, user_id.clone()).await?;
    for session in sessions.sessions {
        match end(&state, &caller, user_id.clone(), session.id).await {
            // Ended meanwhile (it expired, or the user signed out).
            Err(error) if error.status == StatusCode::NOT_FOUND => {}
            other => {
                other?;
            }
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn list(state: &AppState, caller: &Caller, user_id: String) -> Result<Sessions, ApiError> {
    let outgoing = caller.outgoing()?;
    let message = pb::ListSessionsRequest { user_id };
    let response = state
        .auth
        .rpc(&outgoing, Idempotent, AuthClient::list_sessions, message)
        .await?;
    Ok(Sessions {
        sessions: response.sessions.into_iter().map(Session::from).collect(),
    })
}

async fn end(
    state: &AppState,
    caller: &Caller,
    user_id: String,
    session_id: String,
) -> Result<StatusCode, ApiError> {
    let outgoing = caller.outgoing()?;
    let message = pb::EndSessionRequest {
        user_id,
        session_id,
    };
    // Ending a session that has ended changes nothing.
    state
        .auth
        .rpc(&outgoing, Idempotent, AuthClient::end_session, message)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
