//! The tutorials' four text boards, each for the right role.
//!
//! The one place the gateway checks roles (ARCHITECTURE.md: "no handler checks roles"): the
//! boards are static text served by the gateway itself, so no backend RPC exists whose policy
//! could decide. The gateway still never reads a token: auth-service verifies it (GetMe), and
//! the roles checked here are the ones in its answer.

use axum::extract::State;
use token::Role;

use crate::{error::ApiError, extract::Caller, state::AppState};

use super::auth::current_user;

pub async fn all() -> &'static str {
    "Public Content."
}

pub async fn user(State(state): State<AppState>, caller: Caller) -> Result<&'static str, ApiError> {
    current_user(&state, &caller).await?;
    Ok("User Content.")
}

/// Moderators, and admins, who may do everything a moderator may.
pub async fn moderator(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<&'static str, ApiError> {
    require(&state, &caller, &[Role::Moderator, Role::Admin]).await?;
    Ok("Moderator Content.")
}

pub async fn admin(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<&'static str, ApiError> {
    require(&state, &caller, &[Role::Admin]).await?;
    Ok("Admin Content.")
}

async fn require(state: &AppState, caller: &Caller, any_of: &[Role]) -> Result<(), ApiError> {
    let user = current_user(state, caller).await?;
    let allowed = user
        .roles
        .iter()
        .filter_map(|r| r.parse::<Role>().ok())
        .any(|r| any_of.contains(&r));
    if allowed {
        Ok(())
    } else {
        let names: Vec<&str> = any_of.iter().map(|r| r.as_str()).collect();
        Err(ApiError::forbidden(format!(
            "this board requires the role {}",
            names.join(" or ")
        )))
    }
}
