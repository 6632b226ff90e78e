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
    #[error("too many sign-ins in progress; retry shortly")]
    Busy,
    /// Too many failed sign-ins for this account from this client (or from all clients). The
    /// same for unknown accounts; the delay is for `google.rpc.RetryInfo`.
    #[error("too many failed sign-ins; retry later")]
    SignInThrottled(std::time::Duration),
    /// Too many sign-ups from this client were told a name is taken.
    #[error("too many sign-up attempts; retry later")]
    SignUpThrottled(std::time::Duration),
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
