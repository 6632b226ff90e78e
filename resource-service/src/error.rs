//! What can go wrong in a call, as the caller can act on it.

use crate::domain::{Invalid, PersonId};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("person {0} not found")]
    PersonNotFound(PersonId),
    #[error("a person with this email already exists")]
    EmailTaken,
    /// Everything the caller cannot fix (the database is gone, a row does not parse). Logged with
    /// its cause; the caller only learns that it happened.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}
