//! What can go wrong, as the caller can act on it. Mapped to gRPC codes in `grpc.rs` only.

use crate::{
    domain::{ClientId, Invalid, UserId},
    keyring::{PendingKey, RotateError},
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
    #[error(
        "a signing key is already pending: {} activates at {}; rotate again after that",
        .0.kid,
        .0.activates_at
    )]
    KeyPending(PendingKey),
    #[error("HS256 signs with one configured secret, which does not rotate")]
    KeysDoNotRotate,
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
    /// Refused so that the service always keeps an admin who can sign in.
    #[error(
        "this account is the last enabled admin: it cannot lose the admin role or be disabled; make another account an admin first"
    )]
    LastAdmin,
    #[error("session not found")]
    SessionNotFound,
    #[error("too many sign-ins in progress; retry shortly")]
    Busy,
    /// Too many failed sign-ins for this account from this client (or from all clients). The
    /// same for unknown accounts; the delay is for `google.rpc.RetryInfo`.
    #[error("too many failed sign-ins; retry later")]
    SignInThrottled(std::time::Duration),
    /// Too many sign-ups from this client were told a name is taken.
    #[error("too many sign-up attempts; retry later")]
    SignUpThrottled(std::time::Duration),
    #[error("service account name is already taken")]
    ServiceAccountNameTaken,
    #[error("service account {0} not found")]
    ServiceAccountNotFound(ClientId),
    /// The same answer for an unknown client, a wrong secret and a disabled account, so a
    /// caller learns nothing about which (RFC 6749's `invalid_client`).
    #[error("invalid_client")]
    InvalidClient,
    /// The scope names something other than roles the account holds (RFC 6749's
    /// `invalid_scope`).
    #[error("invalid_scope")]
    InvalidScope,
    /// Too many failed client authentications for this client id from this client address.
    #[error("too many failed client authentications; retry later")]
    ClientThrottled(std::time::Duration),
    /// A user-only call (a profile, a password, sessions) made with a service account's token.
    #[error("a service account's token cannot {0}")]
    NotForServiceAccounts(&'static str),
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
            StoreError::ServiceAccountNameTaken => Error::ServiceAccountNameTaken,
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

impl From<RotateError> for Error {
    fn from(e: RotateError) -> Self {
        match e {
            RotateError::Pending(pending) => Error::KeyPending(pending),
            RotateError::NotRotatable => Error::KeysDoNotRotate,
            RotateError::Failed(e)
                if matches!(
                    e.downcast_ref::<StoreError>(),
                    Some(StoreError::Unavailable(_))
                ) =>
            {
                Error::StoreUnavailable(e)
            }
            RotateError::Failed(e) => Error::Unexpected(e),
        }
    }
}
