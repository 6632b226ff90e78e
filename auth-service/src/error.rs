//! What can go wrong, as the caller can act on it. Mapped to gRPC codes in `grpc.rs`.

use crate::{password::HashError, store::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    /// The same answer for an unknown user and a wrong password.
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("username is already taken")]
    UsernameTaken,
    #[error("email is already registered")]
    EmailTaken,
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("too many sign-ins in progress; retry shortly")]
    Busy,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken => Error::UsernameTaken,
            StoreError::EmailTaken => Error::EmailTaken,
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
