//! One suite for the store interface, run against SQLite and against PostgreSQL.

use std::sync::Arc;

use auth_service::{
    domain::{Email, NewUser, UserId, Username},
    store::{
        self, AdminChange, AdminChangeOutcome, NewRevocation, NewSession, RefreshOutcome,
        RevocationKind, Rotation, Store, StoreError, StoredKey, ThrottleKey,
    },
};
use token::Role;

use crate::helpers::fresh_postgres_database;

fn new_user(username: &str, email: &str) -> NewUser {
    NewUser {
        id: UserId::new(),
        username: Username::parse(username).unwrap(),
        email: Email::parse(email).unwrap(),
        password_hash: "$argon2id$stub".into(),
        roles: vec![Role::User],
        created_at: 1_700_000_000,
    }
}

async fn inserts_and_finds_users_by_name_or_email_ignoring_case(store: Arc<Store>) {
    let user = store
        .insert_user(&new_user("Alice", "Alice@Example.com"))
        .await
        .unwrap();
    let by_name = store.find_credentials("alice").await.unwrap().unwrap();
    assert_eq!(by_name.user, user);
    assert_eq!(by_name.password_hash, "$argon2id$stub");
    let by_email = store
        .find_credentials("alice@example.COM")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_email.user.id, user.id);
    assert!(store.find_credentials("bob").await.unwrap().is_none());
    assert_eq!(store.find_user(user.id).await.unwrap(), Some(user));
    assert_eq!(store.find_user(UserId::new()).await.unwrap(), None);
}

async fn unique_indexes_decide_duplicates(store: Arc<Store>) {
    store
        .insert_user(&new_user("alice", "alice@example.com"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .insert_user(&new_user("ALICE", "other@example.com"))
            .await,
        Err(StoreError::UsernameTaken)
    ));
    assert!(matches!(
        store
            .insert_user(&new_user("other", "ALICE@example.com"))
            .await,
        Err(StoreError::EmailTaken)
    ));
}

async fn concurrent_inserts_of_one_name_let_exactly_one_win(store: Arc<Store>) {
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .insert_user(&new_user("racer", &format!("r{i}@example.com")))
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::UsernameTaken) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(won, 1);
}

async fn roles_are_replaced_whole(store: Arc<Store>) {
    let user = store
        .insert_user(&new_user("bob", "bob@example.com"))
        .await
        .unwrap();
    let updated = store
        .set_roles(user.id, &[Role::User, Role::Admin])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.roles, vec![Role::User, Role::Admin]);
    let updated = store
        .set_roles(user.id, &[Role::User, Role::Moderator])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.roles, vec![Role::User, Role::Moderator]);
    assert_eq!(
        store.set_roles(UserId::new(), &[Role::User]).await.unwrap(),
        None
    );
}

async fn the_last_enabled_admin_keeps_the_role_and_stays_enabled(store: Arc<Store>) {
    let admin = store
        .insert_user(&NewUser {
            roles: vec![Role::User, Role::Admin],
            ..new_user("alice", "alice@example.com")
        })
        .await
        .unwrap();
    let other = store
        .insert_user(&NewUser {
            roles: vec![Role::User, Role::Admin],
            ..new_user("bob", "bob@example.com")
        })
        .await
        .unwrap();
    let plain = store
        .insert_user(&new_user("carol", "carol@example.com"))
        .await
        .unwrap();
    let demote = AdminChange::Roles(&[Role::User]);
    let disable = AdminChange::Disabled(Some(1_700_000_000));

    // A disabled admin is no admin: neither as a caller nor as the one left.
    let disabled = store
        .change_as_admin(admin.id, other.id, disable)
        .await
        .unwrap();
    assert!(matches!(disabled, AdminChangeOutcome::Changed { ref after, .. } if after.disabled));
    for change in [demote, disable] {
        assert_eq!(
            store
                .change_as_admin(admin.id, admin.id, change)
                .await
                .unwrap(),
            AdminChangeOutcome::LastAdmin
        );
        assert_eq!(
            store
                .change_as_admin(other.id, admin.id, change)
                .await
                .unwrap(),
            AdminChangeOutcome::CallerNotAdmin
        );
        assert_eq!(
            store
                .change_as_admin(plain.id, admin.id, change)
                .await
                .unwrap(),
            AdminChangeOutcome::CallerNotAdmin
        );
    }
    assert_eq!(
        store
            .change_as_admin(admin.id, UserId::new(), demote)
            .await
            .unwrap(),
        AdminChangeOutcome::NotFound
    );
    let still = store.find_user(admin.id).await.unwrap().unwrap();
    assert_eq!(
        (still.roles, still.disabled),
        (vec![Role::User, Role::Admin], false)
    );

    // With another enabled admin, the change goes through and reports the roles before it.
    store
        .change_as_admin(admin.id, other.id, AdminChange::Disabled(None))
        .await
        .unwrap();
    match store
        .change_as_admin(other.id, admin.id, demote)
        .await
        .unwrap()
    {
        AdminChangeOutcome::Changed { before, after } => {
            assert_eq!(before.roles, vec![Role::User, Role::Admin]);
            assert_eq!(after.roles, vec![Role::User]);
        }
        outcome => panic!("unexpected {outcome:?}"),
    }
}

async fn any_admin_is_true_only_while_some_account_holds_the_role(store: Arc<Store>) {
    assert!(!store.any_admin().await.unwrap());
    let user = store
        .insert_user(&new_user("alice", "alice@example.com"))
        .await
        .unwrap();
    assert!(!store.any_admin().await.unwrap());
    store
        .set_roles(user.id, &[Role::User, Role::Admin])
        .await
        .unwrap();
    assert!(store.any_admin().await.unwrap());
    store.set_roles(user.id, &[Role::User]).await.unwrap();
    assert!(!store.any_admin().await.unwrap());
}

async fn users_are_listed_in_creation_order_a_page_at_a_time(store: Arc<Store>) {
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            store
                .insert_user(&new_user(&format!("user{i}"), &format!("u{i}@example.com")))
                .await
                .unwrap()
                .id,
        );
    }
    let first = store.list_users(None, 2).await.unwrap();
    assert_eq!(first.iter().map(|u| u.id).collect::<Vec<_>>(), ids[..2]);
    let rest = store.list_users(Some(ids[1]), 10).await.unwrap();
    assert_eq!(rest.iter().map(|u| u.id).collect::<Vec<_>>(), ids[2..]);
}

async fn the_first_signing_key_of_a_generation_wins(store: Arc<Store>) {
    let key = |kid: &str| StoredKey {
        kid: kid.into(),
        generation: 1,
        algorithm: "EdDSA".into(),
        encryption: "none".into(),
        private_key: vec![1, 2, 3],
        created_at: 1,
        activates_at: 0,
    };
    assert!(store.insert_signing_key(&key("a")).await.unwrap());
    assert!(!store.insert_signing_key(&key("b")).await.unwrap());
    assert_eq!(store.signing_keys().await.unwrap(), vec![key("a")]);
    store.ping().await.unwrap();
}

async fn a_closed_store_answers_unavailable(store: Arc<Store>) {
    store.ping().await.unwrap();
    store.close().await;
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.find_user(UserId::new()).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store
            .insert_user(&new_user("late", "late@example.com"))
            .await,
        Err(StoreError::Unavailable(_))
    ));
}

async fn revocations_are_read_in_order_after_a_cursor_and_pruned_when_expired(store: Arc<Store>) {
    let revocation = |kind, subject: &str, expires_at| NewRevocation {
        kind,
        subject: subject.into(),
        not_before: 100,
        expires_at,
    };
    assert_eq!(store.last_revocation_seq().await.unwrap(), 0);
    let first = store
        .insert_revocations(&[revocation(RevocationKind::Session, "s1", 1_000)])
        .await
        .unwrap();
    let last = store
        .insert_revocations(&[
            revocation(RevocationKind::User, "u1", 2_000),
            revocation(RevocationKind::Session, "s2", 500),
        ])
        .await
        .unwrap();
    assert!(last > first);
    assert_eq!(store.last_revocation_seq().await.unwrap(), last);

    let all = store.revocations_after(0, 0, 100).await.unwrap();
    let subjects: Vec<_> = all.iter().map(|r| r.subject.as_str()).collect();
    assert_eq!(subjects, ["s1", "u1", "s2"]);
    assert_eq!(all[1].kind, RevocationKind::User);
    assert_eq!(all[2].seq, last);

    // After the first: the rest. Expired ones are left out, and one page is at most `limit`.
    let after = store.revocations_after(first, 600, 100).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].subject, "u1");
    assert_eq!(store.revocations_after(0, 0, 1).await.unwrap().len(), 1);

    assert_eq!(store.prune_revocations(1_000).await.unwrap(), 2);
    let left = store.revocations_after(0, 0, 100).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].subject, "u1");
}

fn new_session(id: &str, user: UserId, token: &[u8], created_at: i64) -> NewSession {
    NewSession {
        id: id.into(),
        user_id: user,
        token_hash: token.to_vec(),
        created_at,
        expires_at: created_at + 100,
        absolute_expires_at: created_at + 1_000,
        client_address: "10.0.0.1".into(),
        user_agent: "test-agent".into(),
    }
}

fn rotation(now: i64, child: &[u8]) -> Rotation {
    Rotation {
        now,
        grace: 10,
        idle: 100,
        child_hash: child.to_vec(),
        sealed_child: [b"sealed-", child].concat(),
        client_address: "10.0.0.2".into(),
        user_agent: "agent-2".into(),
    }
}

async fn a_refresh_rotates_once_retries_within_grace_and_flags_reuse_after(store: Arc<Store>) {
    let user = store
        .insert_user(&new_user("alice", "alice@example.com"))
        .await
        .unwrap();
    store
        .insert_session(&new_session("s1", user.id, b"t0", 1_000))
        .await
        .unwrap();
    // Current token: rotated, idle limit moved on (never past the absolute one).
    assert_eq!(
        store
            .refresh_session(b"t0", &rotation(1_010, b"t1"))
            .await
            .unwrap(),
        RefreshOutcome::Rotated {
            session_id: "s1".into(),
            user_id: user.id,
            expires_at: 1_110
        }
    );
    // The parent again within the window: the same child, sealed, nothing rotated.
    assert_eq!(
        store
            .refresh_session(b"t0", &rotation(1_015, b"x"))
            .await
            .unwrap(),
        RefreshOutcome::Retried {
            session_id: "s1".into(),
            user_id: user.id,
            sealed_child: b"sealed-t1".to_vec(),
            expires_at: 1_110,
        }
    );
    // After the window: reuse, and nothing is written.
    assert_eq!(
        store
            .refresh_session(b"t0", &rotation(1_021, b"y"))
            .await
            .unwrap(),
        RefreshOutcome::Reused {
            session_id: "s1".into(),
            user_id: user.id
        }
    );
    // The child is still current; spending it moves t0 to the spent tokens, where a late
    // reuse is still recognised.
    assert!(matches!(
        store
            .refresh_session(b"t1", &rotation(1_030, b"t2"))
            .await
            .unwrap(),
        RefreshOutcome::Rotated { .. }
    ));
    assert_eq!(
        store
            .refresh_session(b"t0", &rotation(1_031, b"z"))
            .await
            .unwrap(),
        RefreshOutcome::Reused {
            session_id: "s1".into(),
            user_id: user.id
        }
    );
    assert_eq!(
        store
            .refresh_session(b"nope", &rotation(1_031, b"z"))
            .await
            .unwrap(),
        RefreshOutcome::Refused
    );
    // The session list shows where it was used last.
    let listed = store.list_sessions(user.id, 1_031).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_used_at, 1_030);
    assert_eq!(listed[0].user_agent, "agent-2");
    assert_eq!(
        store.find_session_by_token(b"t2").await.unwrap(),
        Some(("s1".to_owned(), user.id))
    );
    // A refresh that names no client keeps what was stored.
    let mut anonymous = rotation(1_032, b"t2b");
    anonymous.user_agent = String::new();
    anonymous.client_address = String::new();
    assert!(matches!(
        store.refresh_session(b"t2", &anonymous).await.unwrap(),
        RefreshOutcome::Rotated { .. }
    ));
    let listed = store.list_sessions(user.id, 1_032).await.unwrap();
    assert_eq!(
        (
            listed[0].user_agent.as_str(),
            listed[0].client_address.as_str()
        ),
        ("agent-2", "10.0.0.2")
    );
    // Past the idle limit the token is refused and the session pruned.
    assert_eq!(
        store
            .refresh_session(b"t2", &rotation(1_500, b"t3"))
            .await
            .unwrap(),
        RefreshOutcome::Refused
    );
    assert!(
        store
            .list_sessions(user.id, 1_500)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.prune_sessions(1_500).await.unwrap(), 1);
    assert_eq!(store.find_session_by_token(b"t2").await.unwrap(), None);
}

async fn concurrent_refreshes_of_one_token_rotate_exactly_once(store: Arc<Store>) {
    let user = store
        .insert_user(&new_user("alice", "alice@example.com"))
        .await
        .unwrap();
    store
        .insert_session(&new_session("s1", user.id, b"t0", 1_000))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .refresh_session(b"t0", &rotation(1_001, &[b'c', i]))
                    .await
            })
        })
        .collect();
    let mut rotated = 0;
    let mut retried = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            RefreshOutcome::Rotated { .. } => rotated += 1,
            RefreshOutcome::Retried { sealed_child, .. } => retried.push(sealed_child),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(rotated, 1);
    assert_eq!(retried.len(), 7);
    retried.dedup();
    assert_eq!(retried.len(), 1, "every retry gets the one stored child");
}

async fn sessions_end_by_id_or_all_and_with_their_user(store: Arc<Store>) {
    let alice = store
        .insert_user(&new_user("alice", "alice@example.com"))
        .await
        .unwrap();
    let bob = store
        .insert_user(&new_user("bob", "bob@example.com"))
        .await
        .unwrap();
    for (i, id) in ["a1", "a2", "a3"].into_iter().enumerate() {
        store
            .insert_session(&new_session(id, alice.id, id.as_bytes(), 1_000 + i as i64))
            .await
            .unwrap();
    }
    store
        .insert_session(&new_session("b1", bob.id, b"b1", 1_000))
        .await
        .unwrap();
    let oldest: Vec<_> = store
        .user_sessions_oldest_first(alice.id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(oldest, ["a1", "a2", "a3"]);
    assert_eq!(
        store
            .delete_sessions(&["a1".into(), "nope".into()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.delete_user_sessions(alice.id).await.unwrap(), 2);
    assert!(
        store
            .list_sessions(alice.id, 1_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.list_sessions(bob.id, 1_000).await.unwrap().len(), 1);
}

async fn a_user_is_disabled_and_enabled_and_a_password_replaced(store: Arc<Store>) {
    let user = store
        .insert_user(&new_user("alice", "alice@example.com"))
        .await
        .unwrap();
    assert!(!user.disabled);
    store
        .insert_session(&new_session("s1", user.id, b"t0", 1_000))
        .await
        .unwrap();
    let disabled = store
        .set_disabled(user.id, Some(1_001))
        .await
        .unwrap()
        .unwrap();
    assert!(disabled.disabled);
    assert!(
        store
            .find_credentials("alice")
            .await
            .unwrap()
            .unwrap()
            .user
            .disabled
    );
    // A disabled user's session cannot be refreshed.
    assert_eq!(
        store
            .refresh_session(b"t0", &rotation(1_002, b"t1"))
            .await
            .unwrap(),
        RefreshOutcome::Refused
    );
    assert!(
        !store
            .set_disabled(user.id, None)
            .await
            .unwrap()
            .unwrap()
            .disabled
    );
    assert!(
        store
            .set_disabled(UserId::new(), None)
            .await
            .unwrap()
            .is_none()
    );

    assert!(
        store
            .set_password_hash(user.id, "$argon2id$new")
            .await
            .unwrap()
    );
    assert_eq!(
        store.password_hash(user.id).await.unwrap().as_deref(),
        Some("$argon2id$new")
    );
    assert!(!store.set_password_hash(UserId::new(), "x").await.unwrap());
}

async fn revocations_answer_whether_a_token_is_revoked(store: Arc<Store>) {
    store
        .insert_revocations(&[
            NewRevocation {
                kind: RevocationKind::Session,
                subject: "s1".into(),
                not_before: 100,
                expires_at: 1_000,
            },
            NewRevocation {
                kind: RevocationKind::User,
                subject: "u1".into(),
                not_before: 100,
                expires_at: 1_000,
            },
        ])
        .await
        .unwrap();
    assert!(store.is_revoked(Some("s1"), "u2", 500, 200).await.unwrap());
    assert!(!store.is_revoked(Some("s2"), "u2", 500, 200).await.unwrap());
    assert!(!store.is_revoked(None, "u2", 50, 200).await.unwrap());
    // The same second as the revocation counts as before it.
    assert!(store.is_revoked(None, "u1", 100, 200).await.unwrap());
    assert!(!store.is_revoked(None, "u1", 101, 200).await.unwrap());
    // Expired revocations no longer count.
    assert!(!store.is_revoked(Some("s1"), "u1", 50, 1_000).await.unwrap());
}

async fn throttle_events_count_once_per_attempt_in_a_window_and_are_pruned(store: Arc<Store>) {
    let key = |client| ThrottleKey {
        kind: "sign-in",
        subject: "user:1",
        client,
    };
    let (a, b) = (key("203.0.113.1"), key("203.0.113.2"));
    assert!(store.record_throttle_event(&a, "r1/aa", 100).await.unwrap());
    assert!(!store.record_throttle_event(&a, "r1/aa", 101).await.unwrap());
    assert!(store.record_throttle_event(&a, "r2/aa", 200).await.unwrap());
    assert!(store.record_throttle_event(&b, "r1/aa", 300).await.unwrap());

    // The n-th most recent since a time, from one client or from all.
    let nth = |key, per_client, since, n| {
        let store = store.clone();
        async move {
            store
                .nth_latest_throttle_event(&key, per_client, since, n)
                .await
                .unwrap()
        }
    };
    assert_eq!(nth(a.clone(), true, 0, 1).await, Some(200));
    assert_eq!(nth(a.clone(), true, 0, 2).await, Some(100));
    assert_eq!(nth(a.clone(), true, 0, 3).await, None);
    assert_eq!(nth(a.clone(), true, 100, 2).await, None);
    assert_eq!(nth(a.clone(), false, 0, 3).await, Some(100));

    store.delete_throttle_event(&a, "r2/aa").await.unwrap();
    assert_eq!(nth(a.clone(), true, 0, 1).await, Some(100));
    assert_eq!(
        store.clear_throttle_events_from_client(&b).await.unwrap(),
        1
    );
    assert!(store.record_throttle_event(&b, "r3/aa", 400).await.unwrap());
    // Subjects kept longer stay past the others' cut.
    let known = ThrottleKey {
        subject: "known:user:1",
        ..key("203.0.113.1")
    };
    assert!(
        store
            .record_throttle_event(&known, "known", 50)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .prune_throttle_events(100, "known:%", 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.latest_throttle_events(&known, 0, 5).await.unwrap(),
        [50]
    );
    assert_eq!(
        store
            .prune_throttle_events(100, "known:%", 50)
            .await
            .unwrap(),
        1
    );
    assert_eq!(nth(a.clone(), false, 0, 1).await, Some(400));
    assert_eq!(
        store
            .clear_throttle_events("sign-in", "user:1")
            .await
            .unwrap(),
        1
    );
    assert_eq!(nth(a, false, 0, 1).await, None);
}

async fn sqlite() -> Arc<Store> {
    let file = std::env::temp_dir().join(format!("auth-store-{}.db", uuid::Uuid::new_v4()));
    store::connect(&format!("sqlite://{}", file.display()), 5)
        .await
        .unwrap()
}

async fn postgres() -> Arc<Store> {
    let url = fresh_postgres_database().await;
    // Connecting twice applies migrations once and then finds nothing to do.
    store::connect(&url, 5).await.unwrap();
    store::connect(&url, 5).await.unwrap()
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $case() { super::$case(super::sqlite().await).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $case() { super::$case(super::postgres().await).await })*
        }
    };
}

suite!(
    inserts_and_finds_users_by_name_or_email_ignoring_case,
    unique_indexes_decide_duplicates,
    concurrent_inserts_of_one_name_let_exactly_one_win,
    roles_are_replaced_whole,
    the_last_enabled_admin_keeps_the_role_and_stays_enabled,
    any_admin_is_true_only_while_some_account_holds_the_role,
    users_are_listed_in_creation_order_a_page_at_a_time,
    the_first_signing_key_of_a_generation_wins,
    a_closed_store_answers_unavailable,
    revocations_are_read_in_order_after_a_cursor_and_pruned_when_expired,
    a_refresh_rotates_once_retries_within_grace_and_flags_reuse_after,
    concurrent_refreshes_of_one_token_rotate_exactly_once,
    sessions_end_by_id_or_all_and_with_their_user,
    a_user_is_disabled_and_enabled_and_a_password_replaced,
    revocations_answer_whether_a_token_is_revoked,
    throttle_events_count_once_per_attempt_in_a_window_and_are_pruned,
);

/// Marks a migration this version does not have as applied, as a newer version would have.
async fn apply_a_newer_versions_migration(url: &str) {
    const SQL: &str = "INSERT INTO _sqlx_migrations \
         (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from the next version', TRUE, $1, 0)";
    let checksum = vec![0u8; 48];
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query(SQL)
            .bind(checksum)
            .execute(&pool)
            .await
            .unwrap();
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query(SQL)
            .bind(checksum)
            .execute(&pool)
            .await
            .unwrap();
    }
}

/// A rolling upgrade's other half: a replica of this version restarting (or rolled back to)
/// after a newer replica migrated the database still starts.
#[tokio::test]
async fn a_database_migrated_by_a_newer_version_still_opens() {
    let file = std::env::temp_dir().join(format!("auth-store-{}.db", uuid::Uuid::new_v4()));
    let sqlite = format!("sqlite://{}", file.display());
    let postgres = fresh_postgres_database().await;
    for url in [sqlite, postgres] {
        store::connect(&url, 2).await.unwrap();
        apply_a_newer_versions_migration(&url).await;
        store::connect(&url, 2)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e:#}"));
    }
    let _ = std::fs::remove_file(file);
}
