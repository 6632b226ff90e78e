//! Fresh PostgreSQL databases, one per service per test, on the throwaway cluster named by
//! `DATABASE_URL`.

use sqlx::{Connection, PgConnection};

/// Creates an empty database and returns its URL. `DATABASE_URL` must name a superuser on a
/// cluster the tests may litter; the databases are left behind for debugging and go away with
/// the cluster.
pub async fn create_database(prefix: &str) -> String {
    let admin_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set. The end-to-end tests need a PostgreSQL superuser URL on a \
             throwaway cluster, e.g. postgres://postgres@127.0.0.1:5432/postgres; scripts/test \
             starts one and sets it"
        )
    });
    let mut connection = PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("failed to connect to DATABASE_URL: {e}"));
    let name = crate::unique(&format!("e2e_{prefix}_"));
    // A database name cannot be a bind parameter; this one is ours, made of [a-z0-9_].
    sqlx::raw_sql(&format!(r#"CREATE DATABASE "{name}""#))
        .execute(&mut connection)
        .await
        .unwrap_or_else(|e| panic!("failed to create database {name}: {e}"));
    connection.close().await.ok();
    with_database(&admin_url, &name)
}

/// The same URL with its path replaced by `database`, query string kept.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
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
            with_database("postgres://u:p@h:1/db?sslmode=disable", "x"),
            "postgres://u:p@h:1/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
