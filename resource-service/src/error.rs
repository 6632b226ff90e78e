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
    /// The database cannot be reached right now; the same call may succeed shortly. The cause
    /// is for the log, not the caller.
    #[error("the database is unavailable; retry shortly")]
    StoreUnavailable(#[source] anyhow::Error),
    /// Everything the caller cannot fix (a query fails for another reason, a row does not
    /// parse). Logged with its cause; the caller only learns that it happened.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}
