//! Admin changes racing each other: two admins demoting or disabling each other at once, and
//! two role changes of one user. Made deterministic by holding the tables' write lock from
//! outside the service while both calls start, so both have read what they read before either
//! writes; the service must then decide them one after the other.

use std::time::Duration;

use auth_service::Config;
use proto::auth::v1 as pb;
use sqlx::{Connection, PgConnection, SqliteConnection};
use tonic::Code;

use crate::admin::set_roles;
use crate::helpers::{PASSWORD, TestApp, authed, postgres_config, spawn_with, with_admin};

/// How long both calls get to reach the lock before it is released: far longer than reading
/// the caller's account takes, and well inside SQLite's 5 s busy timeout.
const HOLD: Duration = Duration::from_millis(800);

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

async fn config(backend: Backend) -> Config {
    match backend {
        Backend::Sqlite => Config::for_tests(),
        Backend::Postgres => postgres_config().await,
    }
}

/// A connection of the test's own, holding what every write to accounts needs.
enum Lock {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl Lock {
    /// SQLite: the database's write lock (`BEGIN IMMEDIATE`). PostgreSQL: both account tables
    /// in EXCLUSIVE mode, which still lets plain reads through, as SQLite's WAL does.
    async fn take(config: &Config) -> Self {
        match &config.database_url {
            None => {
                let url = format!("sqlite://{}", config.data_dir.join("auth.db").display());
                let mut conn = SqliteConnection::connect(&url).await.unwrap();
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Lock::Sqlite(conn)
            }
            Some(url) => {
                let url = secrecy::ExposeSecret::expose_secret(url).to_owned();
                let mut conn = PgConnection::connect(&url).await.unwrap();
                sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
                sqlx::query("LOCK TABLE users, user_roles IN EXCLUSIVE MODE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Lock::Postgres(conn)
            }
        }
    }

    async fn release(self) {
        match self {
            Lock::Sqlite(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            }
            Lock::Postgres(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            }
        }
    }
}

async fn disable(app: &TestApp, token: &str, id: &str) -> Result<(), tonic::Status> {
    app.client
        .clone()
        .set_user_disabled(authed(
            pb::SetUserDisabledRequest {
                user_id: id.into(),
                disabled: true,
            },
            token,
        ))
        .await
        .map(drop)
}

/// A signed-up account made admin by `admin`: its id and a token carrying the role.
async fn new_admin(app: &TestApp, admin: &str, name: &str) -> (String, String) {
    let user = app
        .sign_up(name, &format!("{name}@example.com"))
        .await
        .unwrap();
    set_roles(app, admin, &user.id, &["admin"]).await.unwrap();
    let token = app.sign_in(name, PASSWORD).await.unwrap().access_token;
    (user.id, token)
}

#[derive(Clone, Copy)]
enum Takeaway {
    Demote,
    Disable,
}

/// Admins `a` and `b`, the only ones, take each other's admin role (or account) at once.
async fn two_admins_cannot_take_each_others_admin_at_once(backend: Backend, takeaway: Takeaway) {
    let config = with_admin(config(backend).await);
    let app = spawn_with(config.clone()).await;
    let root = app.admin_token().await;
    let root_id = app
        .sign_in("root", PASSWORD)
        .await
        .unwrap()
        .user
        .unwrap()
        .id;
    let (a, a_token) = new_admin(&app, &root, "alice").await;
    let (b, b_token) = new_admin(&app, &root, "bob").await;
    set_roles(&app, &a_token, &root_id, &["user"])
        .await
        .unwrap();

    let lock = Lock::take(&config).await;
    let act = |token: String, target: String| {
        let app = &app;
        async move {
            match takeaway {
                Takeaway::Demote => set_roles(app, &token, &target, &["user"]).await.map(drop),
                Takeaway::Disable => disable(app, &token, &target).await,
            }
        }
    };
    let release = async {
        tokio::time::sleep(HOLD).await;
        lock.release().await;
    };
    let (by_a, by_b, ()) = tokio::join!(act(a_token, b), act(b_token, a), release);

    let outcomes = [&by_a, &by_b];
    let succeeded = outcomes.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        succeeded, 1,
        "exactly one may succeed, leaving one admin: {by_a:?} / {by_b:?}"
    );
    let refused = outcomes.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    app.stop().await;
}

#[tokio::test]
async fn two_admins_demoting_each_other_at_once_leave_one_admin_on_sqlite() {
    two_admins_cannot_take_each_others_admin_at_once(Backend::Sqlite, Takeaway::Demote).await;
}

#[tokio::test]
async fn two_admins_demoting_each_other_at_once_leave_one_admin_on_postgres() {
    two_admins_cannot_take_each_others_admin_at_once(Backend::Postgres, Takeaway::Demote).await;
}

#[tokio::test]
async fn two_admins_disabling_each_other_at_once_leave_one_admin_on_sqlite() {
    two_admins_cannot_take_each_others_admin_at_once(Backend::Sqlite, Takeaway::Disable).await;
}

#[tokio::test]
async fn two_admins_disabling_each_other_at_once_leave_one_admin_on_postgres() {
    two_admins_cannot_take_each_others_admin_at_once(Backend::Postgres, Takeaway::Disable).await;
}

/// A user holds only `user`. One admin call grants `moderator` while another sets `user` alone;
/// if the second lands last it takes `moderator` away, so it must end the user's sessions, even
/// though the user did not hold `moderator` when that call started. PostgreSQL grants the
/// lock to waiters in order, so there the grant always lands first; on SQLite either may.
async fn a_role_taken_away_by_a_racing_change_ends_the_sessions(backend: Backend) {
    let config = with_admin(config(backend).await);
    let app = spawn_with(config.clone()).await;
    let root = app.admin_token().await;
    let user = app.sign_up("carol", "carol@example.com").await.unwrap();
    let session = app.sign_in("carol", PASSWORD).await.unwrap();

    let lock = Lock::take(&config).await;
    let grant = async {
        set_roles(&app, &root, &user.id, &["moderator"])
            .await
            .unwrap();
    };
    let reset = async {
        // Starts after the grant, so it queues behind it where the database queues waiters.
        tokio::time::sleep(HOLD / 4).await;
        set_roles(&app, &root, &user.id, &["user"]).await.unwrap();
    };
    let release = async {
        tokio::time::sleep(HOLD).await;
        lock.release().await;
    };
    tokio::join!(grant, reset, release);

    let signed_in = app.sign_in("carol", PASSWORD).await.unwrap();
    let roles = signed_in.user.unwrap().roles;
    if matches!(backend, Backend::Postgres) {
        assert_eq!(roles, vec!["user"], "the grant should have landed first");
    }
    let refreshed = app
        .client
        .clone()
        .refresh(pb::RefreshRequest {
            refresh_token: session.refresh_token,
        })
        .await;
    if roles == ["user"] {
        let error = refreshed.expect_err("moderator was taken away: the session must have ended");
        assert_eq!(error.code(), Code::Unauthenticated);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_role_taken_away_by_a_racing_change_ends_the_sessions_on_sqlite() {
    a_role_taken_away_by_a_racing_change_ends_the_sessions(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_role_taken_away_by_a_racing_change_ends_the_sessions_on_postgres() {
    a_role_taken_away_by_a_racing_change_ends_the_sessions(Backend::Postgres).await;
}
