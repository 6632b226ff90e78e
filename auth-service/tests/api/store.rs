//! One suite for the store interface, run against SQLite and against PostgreSQL.

use std::sync::Arc;

use auth_service::{
    domain::{Email, NewUser, UserId, Username},
    store::{self, NewRevocation, RevocationKind, Store, StoreError, StoredKey, ThrottleKey},
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
    assert_eq!(store.prune_throttle_events(100).await.unwrap(), 1);
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
    any_admin_is_true_only_while_some_account_holds_the_role,
    users_are_listed_in_creation_order_a_page_at_a_time,
    the_first_signing_key_of_a_generation_wins,
    a_closed_store_answers_unavailable,
    revocations_are_read_in_order_after_a_cursor_and_pruned_when_expired,
    throttle_events_count_once_per_attempt_in_a_window_and_are_pruned,
);
