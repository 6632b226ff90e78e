//! The admin's view of service accounts, the identities internal services get tokens for
//! through the client-credentials grant (`routes/oauth.rs`): create (the secret shown once),
//! list, disable and enable, rotate the secret, clear the throttle on failed authentications,
//! delete. auth-service enforces that only admins may call these.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{
    backend::Safety::{Idempotent, Once},
    error::ApiError,
    extract::{Caller, Json, OptionalJson, Path, Query, Uuid},
    rpc::AuthClient,
    state::AppState,
};

use super::{
    Paging,
    auth::{NO_STORE, missing, parse_roles, rfc3339},
    next_page, optional_whole_number,
};

/// The most roles one request may list (there are two a service account may hold).
const MAX_ROLES: usize = 8;

/// The longest overlap of a rotated-out secret auth-service allows: 30 days.
const MAX_OVERLAP_SECONDS: i64 = 30 * 24 * 60 * 60;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccount {
    /// Also the OAuth 2.0 client id.
    client_id: String,
    name: String,
    /// Role names as scopes spell them: `user`, `moderator`.
    roles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    /// A disabled account gets no token.
    disabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_created_at: Option<String>,
    /// While a rotated-out secret still works: when it stops.
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_secret_expires_at: Option<String>,
}

impl From<pb::ServiceAccount> for ServiceAccount {
    fn from(account: pb::ServiceAccount) -> Self {
        Self {
            client_id: account.client_id,
            name: account.name,
            roles: account.roles,
            created_at: rfc3339(account.created_at),
            disabled: account.disabled,
            secret_created_at: rfc3339(account.secret_created_at),
            previous_secret_expires_at: rfc3339(account.previous_secret_expires_at),
        }
    }
}

/// An account with its new secret, shown this once.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WithSecret {
    #[serde(flatten)]
    account: ServiceAccount,
    client_secret: String,
}

impl WithSecret {
    /// The answer: never kept by a cache, since it holds the secret.
    fn respond(
        status: StatusCode,
        account: Option<pb::ServiceAccount>,
        client_secret: String,
    ) -> Result<impl IntoResponse, ApiError> {
        let account = account.ok_or_else(missing("service_account"))?.into();
        if client_secret.is_empty() {
            return Err(missing("client_secret")());
        }
        Ok((
            status,
            [(header::CACHE_CONTROL, NO_STORE)],
            axum::Json(Self {
                account,
                client_secret,
            }),
        ))
    }
}

#[derive(Deserialize)]
pub struct NewServiceAccount {
    name: String,
    /// Absent or empty: `["user"]`.
    #[serde(default)]
    roles: Vec<String>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NewServiceAccount>,
) -> Result<impl IntoResponse, ApiError> {
    let outgoing = caller.outgoing()?;
    if body.roles.len() > MAX_ROLES {
        return Err(ApiError::bad_request(format!(
            "roles lists at most {MAX_ROLES} entries"
        )));
    }
    let message = pb::CreateServiceAccountRequest {
        name: body.name,
        roles: parse_roles(body.roles)?,
    };
    // A retry after a lost answer would find the name taken (409) and the secret lost.
    let response = state
        .auth
        .rpc(&outgoing, Once, AuthClient::create_service_account, message)
        .await?;
    WithSecret::respond(
        StatusCode::CREATED,
        response.service_account,
        response.client_secret,
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    service_accounts: Vec<ServiceAccount>,
    /// Absent on the last page.
    next_page_token: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(paging): Query<Paging>,
) -> Result<axum::Json<Page>, ApiError> {
    let outgoing = caller.outgoing()?;
    let (page_size, page_token) = paging.into_parts()?;
    let message = pb::ListServiceAccountsRequest {
        page_size,
        page_token,
    };
    let response = state
        .auth
        .rpc(
            &outgoing,
            Idempotent,
            AuthClient::list_service_accounts,
            message,
        )
        .await?;
    Ok(axum::Json(Page {
        service_accounts: response
            .service_accounts
            .into_iter()
            .map(ServiceAccount::from)
            .collect(),
        next_page_token: next_page(response.next_page_token),
    }))
}

/// Deletes the account and revokes its tokens (auth-service does both); 204.
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(Uuid(client_id)): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let outgoing = caller.outgoing()?;
    let message = pb::DeleteServiceAccountRequest { client_id };
    // Not retried: a second attempt after a lost answer would say 404 for a deletion that
    // happened.
    state
        .auth
        .rpc(&outgoing, Once, AuthClient::delete_service_account, message)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Forgets the account's failed client authentications from every address, lifting the
/// throttle guesses put on it (neither a new secret nor disabling does); 204.
pub async fn clear_sign_in_throttle(
    State(state): State<AppState>,
    caller: Caller,
    Path(Uuid(client_id)): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let message = pb::ClearSignInThrottleRequest {
        user_id: String::new(),
        client_id,
    };
    super::admin::clear_throttle(&state, &caller, message).await
}

/// A disabled account gets no token, and the ones it holds are revoked.
pub async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path(Uuid(client_id)): Path<Uuid>,
) -> Result<axum::Json<ServiceAccount>, ApiError> {
    set_disabled(&state, &caller, client_id, true).await
}

pub async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(Uuid(client_id)): Path<Uuid>,
) -> Result<axum::Json<ServiceAccount>, ApiError> {
    set_disabled(&state, &caller, client_id, false).await
}

async fn set_disabled(
    state: &AppState,
    caller: &Caller,
    client_id: String,
    disabled: bool,
) -> Result<axum::Json<ServiceAccount>, ApiError> {
    let outgoing = caller.outgoing()?;
    let message = pb::SetServiceAccountDisabledRequest {
        client_id,
        disabled,
    };
    // Setting the flag to a given value is idempotent.
    let response = state
        .auth
        .rpc(
            &outgoing,
            Idempotent,
            AuthClient::set_service_account_disabled,
            message,
        )
        .await?;
    Ok(axum::Json(
        response
            .service_account
            .ok_or_else(missing("service_account"))?
            .into(),
    ))
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// How long the previous secret keeps working: absent (or null) means auth-service's
    /// default (24 h), 0 ends it at once.
    #[serde(default, deserialize_with = "optional_whole_number")]
    overlap_seconds: Option<i64>,
}

/// A new secret, shown once; the previous one works for the overlap asked for.
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(Uuid(client_id)): Path<Uuid>,
    OptionalJson(body): OptionalJson<Rotation>,
) -> Result<impl IntoResponse, ApiError> {
    let outgoing = caller.outgoing()?;
    if let Some(overlap) = body.overlap_seconds
        && !(0..=MAX_OVERLAP_SECONDS).contains(&overlap)
    {
        return Err(ApiError::bad_request(format!(
            "overlapSeconds must be between 0 and {MAX_OVERLAP_SECONDS} (30 days), got {overlap}"
        )));
    }
    let message = pb::RotateServiceAccountSecretRequest {
        client_id,
        overlap_seconds: body.overlap_seconds,
    };
    // Not retried: a second rotation would retire the secret the first one made.
    let response = state
        .auth
        .rpc(
            &outgoing,
            Once,
            AuthClient::rotate_service_account_secret,
            message,
        )
        .await?;
    WithSecret::respond(
        StatusCode::OK,
        response.service_account,
        response.client_secret,
    )
}
