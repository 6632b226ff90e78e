//! Empty PostgreSQL databases for tests: one new database per call on the throwaway cluster
//! `DATABASE_URL` names, so tests never share rows and never clean up after one another. The
//! databases are left behind for debugging and go away with the cluster.
//!
//! Tests that need PostgreSQL never skip: without `DATABASE_URL` they fail and say what to run.

use sqlx::{Connection, PgConnection};
use url::Url;

/// Creates an empty database named `<prefix>_<random>` and returns its URL. `prefix` (made of
/// `[a-z0-9_]`) says which suite made it. `DATABASE_URL` must name a superuser on a cluster the
/// tests may litter.
///
/// # Panics
///
/// When `DATABASE_URL` is missing or unusable, or the database cannot be created: a test cannot
/// go on without it.
pub async fn create_database(prefix: &str) -> String {
    let admin_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set: these tests need a PostgreSQL superuser URL on a throwaway \
             cluster, e.g. postgres://postgres@127.0.0.1:5432/postgres; scripts/test starts one \
             and sets it"
        )
    });
    create_database_on(&admin_url, prefix).await
}

/// [`create_database`] on the cluster `admin_url` (a superuser URL) names instead, e.g. one a
/// test started for itself to stop and start again.
pub async fn create_database_on(admin_url: &str, prefix: &str) -> String {
    assert!(
        prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "a test database prefix is made of [a-z0-9_], not {prefix:?}"
    );
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let url = with_database(admin_url, &name);
    let mut connection = PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("failed to connect to the test cluster: {e}"));
    // A database name cannot be a bind parameter; this one is checked above to be [a-z0-9_].
    sqlx::raw_sql(&format!(r#"CREATE DATABASE "{name}""#))
        .execute(&mut connection)
        .await
        .unwrap_or_else(|e| panic!("failed to create database {name}: {e}"));
    // The database exists whether or not the goodbye reaches the server.
    connection.close().await.ok();
    url
}

/// `url` with its path replaced by `database`; user, host, port and query are kept.
fn with_database(url: &str, database: &str) -> String {
    let mut url = Url::parse(url).unwrap_or_else(|e| panic!("DATABASE_URL is not a URL: {e}"));
    url.set_path(database);
    url.into()
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_replaces_the_path_and_keeps_the_query() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h:5/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:5/x?sslmode=disable"
        );
    }

    #[test]
    fn a_url_without_a_path_keeps_its_host() {
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(
            with_database("postgres://u@h:5?sslmode=disable", "x"),
            "postgres://u@h:5/x?sslmode=disable"
        );
    }
}
