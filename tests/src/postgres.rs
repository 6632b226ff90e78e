//! Fresh PostgreSQL databases, one per service per test, on the throwaway cluster named by
//! `DATABASE_URL`.

/// Creates an empty database for `service` and returns its URL; see [`testdb::create_database`].
pub async fn create_database(service: &str) -> String {
    testdb::create_database(&format!("e2e_{service}")).await
}
