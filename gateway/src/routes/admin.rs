//! The admin's view of accounts: the user list, role changes, disabling and enabling, and
//! lifting a sign-in throttle.
//! auth-service enforces that only admins may call these.

use axum::{extract::State, http::StatusCode};
use proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{
    backend::Safety::Idempotent,
    error::ApiError,
    extract::{Caller, Json, Path, Query, Uuid},
    rpc::AuthClient,
    state::AppState,
};

use super::{
    Paging,
    auth::{User, missing, parse_roles, rfc3339},
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
    let (page_size, page_token) = paging.into_parts()?;
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
    Path(Uuid(id)): Path<Uuid>,
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
        .await
        .map_err(self_change_conflicts)?;
    Ok(axum::Json(
        response.user.ok_or_else(missing("user"))?.into(),
    ))
}

/// A disabled user cannot sign in or refresh, and every session ends (auth-service does both).
pub async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path(Uuid(id)): Path<Uuid>,
) -> Result<axum::Json<User>, ApiError> {
    set_disabled(&state, &caller, id, true).await
}

pub async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(Uuid(id)): Path<Uuid>,
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
        .await
        .map_err(self_change_conflicts)?;
    Ok(axum::Json(
        response.user.ok_or_else(missing("user"))?.into(),
    ))
}

/// auth-service refuses an admin's disabling or demoting their own account as a failed
/// precondition; the request itself is well formed, so the API answers 409 (the target's state,
/// being the caller, conflicts), not the 400 of a malformed request.
fn self_change_conflicts(error: ApiError) -> ApiError {
    if error.code == "failed_precondition" {
        ApiError {
            status: StatusCode::CONFLICT,
            ..error
        }
    } else {
        error
    }
}

/// Forgets the account's failed sign-ins from every client; 204 on success.
pub async fn clear_sign_in_throttle(
    State(state): State<AppState>,
    caller: Caller,
    Path(Uuid(id)): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let message = pb::ClearSignInThrottleRequest {
        user_id: id,
        client_id: String::new(),
    };
    clear_throttle(&state, &caller, message).await
}

/// ClearSignInThrottle for a user's or a service account's routes; 204 on success.
pub(super) async fn clear_throttle(
    state: &AppState,
    caller: &Caller,
    message: pb::ClearSignInThrottleRequest,
) -> Result<StatusCode, ApiError> {
    let outgoing = caller.outgoing()?;
    // Clearing twice clears once, so a retry cannot do harm.
    state
        .auth
        .rpc(
            &outgoing,
            Idempotent,
            AuthClient::clear_sign_in_throttle,
            message,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotated {
    /// The new key's id, as the JWKS and token headers will name it.
    kid: String,
    /// When it starts signing (RFC 3339); it is in the JWKS from now on.
    activates_at: Option<String>,
}

/// Stores a new signing key, published at once and signing after the publish-ahead time. 409
/// while a key is pending; 400 with HS256, which does not rotate.
pub async fn rotate_signing_key(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Rotated>, ApiError> {
    let outgoing = caller.outgoing()?;
    // Not idempotent: a retry after a lost answer would find the key pending and say 409.
    let response = state
        .auth
        .rpc(
            &outgoing,
            crate::backend::Safety::Once,
            AuthClient::rotate_signing_key,
            pb::RotateSigningKeyRequest {},
        )
        .await?;
    Ok(axum::Json(Rotated {
        kid: response.kid,
        activates_at: rfc3339(response.activates_at),
    }))
}
