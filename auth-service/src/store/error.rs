//! What a failed statement means to the caller, decided in one place for both databases.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("username is already taken")]
    UsernameTaken,
    #[error("email is already registered")]
    EmailTaken,
    #[error("service account name is already taken")]
    ServiceAccountNameTaken,
    /// The database cannot be reached right now (pool exhausted or closed, connection lost,
    /// server shutting down); the same call may succeed shortly.
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Turns a failed statement into a [`StoreError`], with `context` saying what was being done.
pub(super) fn failed(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |error| {
        let unavailable = database::is_unavailable(&error);
        let error = anyhow::Error::new(error).context(context);
        if unavailable {
            StoreError::Unavailable(error)
        } else {
            StoreError::Unexpected(error)
        }
    }
}

/// Maps a unique-index violation to the field it protects.
pub(super) fn insert_user_failed(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &error
        && db.is_unique_violation()
    {
        // PostgreSQL names the constraint; SQLite names the index in its message.
        let name = db.constraint().unwrap_or_else(|| db.message());
        if name.contains("users_email_key") {
            return StoreError::EmailTaken;
        }
        if name.contains("users_username_key") {
            return StoreError::UsernameTaken;
        }
    }
    failed("failed to insert user")(error)
}

/// A service account's name is unique: PostgreSQL names the index, SQLite the column.
pub(super) fn insert_service_account_failed(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &error
        && db.is_unique_violation()
    {
        let name = db.constraint().unwrap_or_else(|| db.message());
        if name.contains("service_accounts_name_key") || name.contains("service_accounts.name") {
            return StoreError::ServiceAccountNameTaken;
        }
    }
    failed("failed to insert service account")(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_or_closed_pool_is_unavailable_and_a_bad_row_is_not() {
        for error in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into()),
        ] {
            assert!(
                matches!(failed("test")(error), StoreError::Unavailable(_)),
                "should be unavailable"
            );
        }
        assert!(matches!(
            failed("test")(sqlx::Error::RowNotFound),
            StoreError::Unexpected(_)
        ));
    }
}
