//! What can go wrong, as the caller can act on it. Mapped to gRPC codes in `grpc.rs` only.

use crate::{
    domain::{Invalid, UserId},
    password::HashError,
    store::StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value in the request did not parse; the message says which and why.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("username (or email) and password are required")]
    CredentialsMissing,
    /// The same answer for an unknown user and a wrong password.
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("username is already taken")]
    UsernameTaken,
    #[error("email is already registered")]
    EmailTaken,
    #[error("only an admin can grant roles beyond user")]
    CannotGrantRoles,
    /// The token is valid, but the account it names was deleted after it was issued.
    #[error("this token's account no longer exists")]
    AccountGone,
    #[error("user {0} not found")]
    UserNotFound(UserId),
    /// Refused so that an admin cannot lock every admin out by mistake.
    #[error("an admin cannot remove their own admin role")]
    CannotDropOwnAdmin,
    /// Someone signed up with the configured bootstrap admin's name before it was created.
    #[error(
        "an account named {0:?} exists but is not an admin; choose another AUTH_BOOTSTRAP_ADMIN_USERNAME"
    )]
    BootstrapNameTaken(String),
    /// The same answer for an unknown, spent, expired or revoked refresh token, so a caller
    /// learns nothing about which.
    #[error("refresh token is invalid or expired")]
    RefreshRefused,
    /// Told only to someone who gave the right password.
    #[error("this account is disabled")]
    AccountDisabled,
    #[error("the current password is incorrect")]
    WrongCurrentPassword,
    /// The caller's token names a role the database no longer grants (a demoted admin).
    /// A sign-out's access token failed a check other than its expiry.
    #[error("access token is invalid")]
    InvalidAccessToken,
    #[error("this action needs the admin role")]
    NotAdmin,
    #[error("an admin cannot disable their own account")]
    CannotDisableSelf,
    #[error("session not found")]
    SessionNotFound,
    #[error("too many sign-ins in progress; retry shortly")]
    Busy,
    /// The database cannot be reached right now; the same call may succeed shortly. The cause
    /// is for the log, not the caller.
    #[error("the database is unavailable; retry shortly")]
    StoreUnavailable(#[source] anyhow::Error),
    /// Everything the caller cannot fix. Logged with its cause; the caller only learns that it
    /// happened.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken => Error::UsernameTaken,
            StoreError::EmailTaken => Error::EmailTaken,
            StoreError::Unavailable(e) => Error::StoreUnavailable(e),
            StoreError::Unexpected(e) => Error::Unexpected(e),
        }
    }
}

impl From<HashError> for Error {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => Error::Busy,
            HashError::Unexpected(e) => Error::Unexpected(e),
        }
    }
}
