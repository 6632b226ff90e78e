//! The admin's view of accounts: the user list, role changes, disabling and enabling.
//! auth-service enforces that only admins may call these.

use axum::extract::State;
use proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{
    backend::Safety::Idempotent,
    error::ApiError,
    extract::{Caller, Json, Path, Query},
    rpc::AuthClient,
    state::AppState,
};

use super::{
    Paging,
    auth::{User, missing, parse_roles},
    next_page,
};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    users: Vec<User>,
    /// Absent on the last page.
    next_page_token: Option<String>,
}

pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    Query(paging): Query<Paging>,
) -> Result<axum::Json<Page>, ApiError> {
    let outgoing = caller.outgoing()?;
    let (page_size, page_token) = paging.into_parts();
    let message = pb::ListUsersRequest {
        page_size,
        page_token,
    };
    let response = state
        .auth
        .rpc(&outgoing, Idempotent, AuthClient::list_users, message)
        .await?;
    Ok(axum::Json(Page {
        users: response.users.into_iter().map(User::from).collect(),
        next_page_token: next_page(response.next_page_token),
    }))
}

#[derive(Deserialize)]
pub struct Roles {
    roles: Vec<String>,
}

pub async fn set_roles(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<Roles>,
) -> Result<axum::Json<User>, ApiError> {
    let outgoing = caller.outgoing()?;
    let message = pb::SetUserRolesRequest {
        user_id: id,
        roles: parse_roles(body.roles)?,
    };
    // Setting roles to a given list is idempotent, so a retry cannot do harm.
    let response = state
        .auth
        .rpc(&outgoing, Idempotent, AuthClient::set_user_roles, message)
        .await?;
    Ok(axum::Json(
        response.user.ok_or_else(missing("user"))?.into(),
    ))
}

/// A disabled user cannot sign in or refresh, and every session ends (auth-service does both).
pub async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<User>, ApiError> {
    set_disabled(&state, &caller, id, true).await
}

pub async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<User>, ApiError> {
    set_disabled(&state, &caller, id, false).await
}

async fn set_disabled(
    state: &AppState,
    caller: &Caller,
    user_id: String,
    disabled: bool,
) -> Result<axum::Json<User>, ApiError> {
    let outgoing = caller.outgoing()?;
    let message = pb::SetUserDisabledRequest { user_id, disabled };
    // Setting the flag to a given value is idempotent.
    let response = state
        .auth
        .rpc(
            &outgoing,
            Idempotent,
            AuthClient::set_user_disabled,
            message,
        )
        .await?;
    Ok(axum::Json(
        response.user.ok_or_else(missing("user"))?.into(),
    ))
}
