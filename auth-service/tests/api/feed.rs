//! `WatchRevocations`: the snapshot, changes as they commit (written by this replica or any
//! other, through the database), heartbeats, resuming from a cursor (and starting over when the
//! cursor came from a database since replaced), and streams that end when the server drains.

use std::{sync::Arc, time::Duration};

use auth_service::{
    Config,
    feed::{Feed, FeedConfig},
    store::{self, NewRevocation, RevocationKind, Store},
};
use proto::auth::v1::{self as pb, revocation::Subject};
use tonic::Streaming;

use crate::helpers::{KEK, TestApp, authed, fresh_postgres_database, spawn_with};

/// Generous: asserts that a change arrives, not how fast.
const WITHIN: Duration = Duration::from_secs(5);

fn sqlite_url() -> String {
    let file = std::env::temp_dir().join(format!("auth-feed-{}.db", uuid::Uuid::new_v4()));
    format!("sqlite://{}", file.display())
}

fn config_on(url: &str, poll: Duration) -> Config {
    let mut config = Config::for_tests();
    config.database_url = Some(url.to_owned().into());
    if !url.starts_with("sqlite:") {
        config.key_encryption_key = Some(KEK.into());
    }
    config.revocation_poll = Some(poll);
    config.revocation_heartbeat = Duration::from_millis(200);
    config
}

async fn revoke_session(store: &Store, sid: &str) -> i64 {
    let now = token::unix_now();
    store
        .insert_revocations(&[NewRevocation {
            kind: RevocationKind::Session,
            subject: sid.into(),
            not_before: now,
            expires_at: now + 900,
        }])
        .await
        .unwrap()
}

async fn watch(app: &TestApp, after: i64) -> Streaming<pb::RevocationBatch> {
    app.client
        .clone()
        .watch_revocations(pb::WatchRevocationsRequest { after })
        .await
        .unwrap()
        .into_inner()
}

async fn next(stream: &mut Streaming<pb::RevocationBatch>) -> pb::RevocationBatch {
    tokio::time::timeout(WITHIN, stream.message())
        .await
        .expect("a message in time")
        .unwrap()
        .expect("the stream goes on")
}

/// Skips heartbeats until a batch with revocations arrives.
async fn next_change(stream: &mut Streaming<pb::RevocationBatch>) -> pb::RevocationBatch {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let batch = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("a change in time")
            .unwrap()
            .expect("the stream goes on");
        if !batch.revocations.is_empty() {
            return batch;
        }
    }
}

fn sessions(batch: &pb::RevocationBatch) -> Vec<&str> {
    batch
        .revocations
        .iter()
        .filter_map(|r| match &r.subject {
            Some(Subject::SessionId(sid)) => Some(sid.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_stream_sends_the_snapshot_then_changes_then_heartbeats_and_resumes_from_its_cursor() {
    let url = sqlite_url();
    let app = spawn_with(config_on(&url, Duration::from_millis(50))).await;
    // Another connection to the same database, as another replica would write.
    let writer: Arc<Store> = store::connect(&url, 2).await.unwrap();
    let first = revoke_session(&writer, "s1").await;

    let mut stream = watch(&app, 0).await;
    let snapshot = next(&mut stream).await;
    assert!(snapshot.snapshot && snapshot.snapshot_done);
    assert_eq!(sessions(&snapshot), ["s1"]);
    assert_eq!(snapshot.cursor, first);
    // It says how often to expect a heartbeat, so the follower can tell quiet from dead.
    assert_eq!(snapshot.heartbeat_millis, 200);

    let second = revoke_session(&writer, "s2").await;
    let change = next_change(&mut stream).await;
    assert!(!change.snapshot);
    assert_eq!(sessions(&change), ["s2"]);
    assert_eq!(change.cursor, second);

    // Quiet: a heartbeat that carries the cursor.
    let heartbeat = next(&mut stream).await;
    assert!(heartbeat.revocations.is_empty() && !heartbeat.snapshot);
    assert_eq!(heartbeat.cursor, second);

    // Resuming after the first sends only what came later.
    let mut resumed = watch(&app, first).await;
    let snapshot = next(&mut resumed).await;
    assert!(snapshot.snapshot_done);
    assert_eq!(sessions(&snapshot), ["s2"]);
    assert_eq!(snapshot.cursor, second);
}

#[tokio::test]
async fn expired_revocations_are_left_out_of_the_snapshot() {
    let url = sqlite_url();
    let app = spawn_with(config_on(&url, Duration::from_millis(50))).await;
    let writer = store::connect(&url, 2).await.unwrap();
    let now = token::unix_now();
    let last = writer
        .insert_revocations(&[
            NewRevocation {
                kind: RevocationKind::User,
                subject: "u-live".into(),
                not_before: now,
                expires_at: now + 900,
            },
            NewRevocation {
                kind: RevocationKind::User,
                subject: "u-expired".into(),
                not_before: now - 2_000,
                expires_at: now - 1_000,
            },
        ])
        .await
        .unwrap();
    let mut stream = watch(&app, 0).await;
    let snapshot = next(&mut stream).await;
    assert_eq!(snapshot.revocations.len(), 1);
    assert_eq!(
        snapshot.revocations[0].subject,
        Some(Subject::UserId("u-live".into()))
    );
    // At least past the live row (past the expired one too once the watcher has read it).
    assert!(snapshot.cursor >= last - 1);
}

#[tokio::test]
async fn a_revocation_committed_through_one_postgres_replica_is_pushed_by_the_other() {
    let url = fresh_postgres_database().await;
    // Polling once a minute: within the test only LISTEN/NOTIFY can bring the change.
    let config = config_on(&url, Duration::from_secs(60));
    let a = spawn_with(config.clone()).await;
    let b = spawn_with(config).await;
    let mut stream = watch(&b, 0).await;
    assert!(next(&mut stream).await.snapshot_done);

    // Replica a's store, as its sign-out handler would use it.
    let writer = store::connect(&url, 2).await.unwrap();
    let seq = revoke_session(&writer, "ended-on-a").await;
    let change = next_change(&mut stream).await;
    assert_eq!(sessions(&change), ["ended-on-a"]);
    assert_eq!(change.cursor, seq);
    drop(a);
}

/// Waits until `view` refuses the token of session `sid`.
async fn refused(view: &authn::Revocations, sid: &str) {
    let token = claims("u", sid, token::unix_now() - 1);
    let deadline = tokio::time::Instant::now() + WITHIN;
    while view.check(&token).is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "session {sid} still accepted (follower cursor {})",
            view.cursor()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A follower whose cursor came from a database that was then replaced (`old_url`, then
/// `new_url`: numbering started again) still gets what is revoked afterwards, also after its
/// stream breaks once the new numbering has passed the old cursor.
async fn a_follower_ahead_of_a_restarted_feed_starts_over(old_url: &str, new_url: &str) {
    let config = |url: &str| {
        let mut config = config_on(url, Duration::from_millis(50));
        // Replicas of one database share the key that seals its signing keys.
        config.key_encryption_key = Some(KEK.into());
        config
    };
    let old = spawn_with(config(old_url)).await;
    // Two replicas on the replacement database, so the follower can lose one.
    let new_a = spawn_with(config(new_url)).await;
    let new_b = spawn_with(config(new_url)).await;
    let old_writer = store::connect(old_url, 2).await.unwrap();
    let new_writer = store::connect(new_url, 2).await.unwrap();
    let mut gone = Vec::new();
    for i in 0..8 {
        let sid = format!("old-{i}");
        gone.push(revoke_session(&old_writer, &sid).await);
    }
    let old_cursor = *gone.last().unwrap();

    let mut config = authn::RevocationConfig::new(
        [&old, &new_a, &new_b]
            .iter()
            .map(|app| format!("http://{}", app.addr))
            .collect(),
    );
    config.max_backoff = Duration::from_millis(200);
    let view = authn::RevocationFollower::start(config).unwrap();
    refused(&view, "old-7").await;
    assert_eq!(view.cursor(), old_cursor);

    // The old database's replica goes; the follower resumes on the new database with the old
    // cursor, which is beyond anything the new one has numbered.
    old.stop().await;
    let first = revoke_session(&new_writer, "new-1").await;
    assert!(first < old_cursor);
    refused(&view, "new-1").await;
    // It took the new feed's cursor, so it resumes from there next time.
    assert_eq!(view.cursor(), first);
    // What the old database revoked is still refused until it expires.
    refused(&view, "old-7").await;

    // Its replica goes too, and the new numbering passes the old cursor before the follower
    // is back (one transaction, long before its first retry): resuming from the old cursor
    // would skip everything numbered up to it.
    new_a.stop().await;
    let now = token::unix_now();
    let batch: Vec<_> = (2..=10)
        .map(|i| NewRevocation {
            kind: RevocationKind::Session,
            subject: format!("new-{i}"),
            not_before: now,
            expires_at: now + 900,
        })
        .collect();
    let last = new_writer.insert_revocations(&batch).await.unwrap();
    assert!(last > old_cursor);
    for i in 2..=10 {
        refused(&view, &format!("new-{i}")).await;
    }
    assert_eq!(view.cursor(), last);
    drop(new_b);
}

#[tokio::test]
async fn a_follower_ahead_of_a_restarted_feed_starts_over_on_sqlite() {
    a_follower_ahead_of_a_restarted_feed_starts_over(&sqlite_url(), &sqlite_url()).await;
}

#[tokio::test]
async fn a_follower_ahead_of_a_restarted_feed_starts_over_on_postgres() {
    let old = fresh_postgres_database().await;
    let new = fresh_postgres_database().await;
    a_follower_ahead_of_a_restarted_feed_starts_over(&old, &new).await;
}

#[tokio::test]
async fn a_database_whose_numbering_goes_back_under_a_running_replica_still_reaches_everyone() {
    let url = fresh_postgres_database().await;
    let app = spawn_with(config_on(&url, Duration::from_millis(50))).await;
    let writer = store::connect(&url, 2).await.unwrap();
    for i in 0..8 {
        revoke_session(&writer, &format!("old-{i}")).await;
    }
    let user = app.sign_up("alice", "alice@example.com").await.unwrap();
    let token = app
        .sign_in("alice", crate::helpers::PASSWORD)
        .await
        .unwrap()
        .access_token;
    let view = authn::RevocationFollower::start(authn::RevocationConfig::new(vec![format!(
        "http://{}",
        app.addr
    )]))
    .unwrap();
    refused(&view, "old-7").await;

    // Restored from a backup taken before any revocation (or failed over to a standby that
    // had not seen them), while the replica runs: numbering starts again at 1.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("TRUNCATE revocations RESTART IDENTITY")
        .execute(&pool)
        .await
        .unwrap();
    let now = token::unix_now();
    writer
        .insert_revocations(&[
            NewRevocation {
                kind: RevocationKind::Session,
                subject: "new-1".into(),
                not_before: now,
                expires_at: now + 900,
            },
            NewRevocation {
                kind: RevocationKind::User,
                subject: user.id.clone(),
                not_before: now,
                expires_at: now + 900,
            },
        ])
        .await
        .unwrap();

    // The follower gets it, and so does the replica's own view.
    refused(&view, "new-1").await;
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let mut client = app.client.clone();
        match client.get_me(authed(pb::GetMeRequest {}, &token)).await {
            Err(status) => {
                assert_eq!(status.message(), "token revoked");
                break;
            }
            Ok(_) => {
                assert!(tokio::time::Instant::now() < deadline, "still accepted");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_cursor_beyond_the_feed_gets_the_whole_snapshot_and_the_feed_cursor() {
    let url = sqlite_url();
    let app = spawn_with(config_on(&url, Duration::from_millis(50))).await;
    let writer = store::connect(&url, 2).await.unwrap();
    let seq = revoke_session(&writer, "s1").await;
    let mut stream = watch(&app, seq + 100).await;
    let snapshot = next(&mut stream).await;
    assert!(snapshot.snapshot_done);
    assert_eq!(sessions(&snapshot), ["s1"]);
    assert_eq!(snapshot.cursor, seq);
    // And the next revocation reaches it.
    revoke_session(&writer, "s2").await;
    assert_eq!(sessions(&next_change(&mut stream).await), ["s2"]);
}

#[tokio::test]
async fn streams_end_when_the_server_drains_so_followers_move_on() {
    let app = spawn_with(config_on(&sqlite_url(), Duration::from_millis(50))).await;
    let mut stream = watch(&app, 0).await;
    assert!(next(&mut stream).await.snapshot_done);
    // Well within the drain grace: the open stream does not hold the drain.
    tokio::time::timeout(WITHIN, app.stop())
        .await
        .expect("stops without waiting for the stream");
    let end = tokio::time::timeout(WITHIN, async {
        loop {
            match stream.message().await {
                Ok(Some(batch)) if batch.revocations.is_empty() => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}

#[tokio::test]
async fn auth_service_itself_refuses_a_revoked_token() {
    let url = sqlite_url();
    let app = spawn_with(config_on(&url, Duration::from_millis(50))).await;
    let writer = store::connect(&url, 2).await.unwrap();
    let user = app.sign_up("alice", "alice@example.com").await.unwrap();
    let token = app
        .sign_in("alice", crate::helpers::PASSWORD)
        .await
        .unwrap()
        .access_token;
    let me = || {
        let mut client = app.client.clone();
        let request = authed(pb::GetMeRequest {}, &token);
        async move { client.get_me(request).await }
    };
    me().await.unwrap();

    writer
        .insert_revocations(&[NewRevocation {
            kind: RevocationKind::User,
            subject: user.id.clone(),
            not_before: token::unix_now(),
            expires_at: token::unix_now() + 900,
        }])
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        match me().await {
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unauthenticated);
                assert_eq!(status.message(), "token revoked");
                break;
            }
            Ok(_) => {
                assert!(tokio::time::Instant::now() < deadline, "still accepted");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_sign_out_on_this_replica_is_pushed_at_once_not_at_the_next_poll() {
    // A poll far longer than the bound below: only the replica waking its own feed can meet it.
    let app = spawn_with(config_on(&sqlite_url(), Duration::from_secs(60))).await;
    app.sign_up("bob", "bob@example.com").await.unwrap();
    let token = app
        .sign_in("bob", crate::helpers::PASSWORD)
        .await
        .unwrap()
        .access_token;
    let mut stream = watch(&app, 0).await;
    let snapshot = next(&mut stream).await;
    assert!(snapshot.snapshot_done && snapshot.revocations.is_empty());

    let signed_out = tokio::time::Instant::now();
    app.client
        .clone()
        .sign_out(authed(pb::SignOutRequest::default(), &token))
        .await
        .unwrap();
    // The replica itself refuses the token from its next call on, before any feed has run.
    let refused = app
        .client
        .clone()
        .get_me(authed(pb::GetMeRequest {}, &token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert_eq!(refused.message(), "token revoked");
    let change = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let batch = stream.message().await.unwrap().expect("the stream goes on");
            if !batch.revocations.is_empty() {
                return batch;
            }
        }
    })
    .await
    .expect("the sign-out was pushed before the next poll");
    assert_eq!(sessions(&change).len(), 1, "{change:?}");
    eprintln!(
        "pushed {:?} after the sign-out call began",
        signed_out.elapsed()
    );
}

/// The token of `sub`'s session `sid`, issued `iat`, as a verifier would hold it.
fn claims(sub: &str, sid: &str, iat: i64) -> token::Claims {
    token::Claims {
        iss: "auth-service".into(),
        aud: "persons".into(),
        sub: sub.into(),
        iat,
        nbf: iat,
        exp: iat + 900,
        jti: uuid::Uuid::new_v4().to_string(),
        roles: Vec::new(),
        username: "bob".into(),
        sid: Some(sid.into()),
        client_id: None,
    }
}

#[tokio::test]
async fn what_a_replica_revokes_is_in_its_own_view_before_its_call_answers() {
    let store = store::connect(&sqlite_url(), 2).await.unwrap();
    // Polling once a minute: within the test only the replica's own doing reaches its view.
    let feed = Feed::start(
        store.clone(),
        FeedConfig {
            poll: Duration::from_secs(60),
            heartbeat: Duration::from_millis(200),
        },
    )
    .await
    .unwrap();
    let view = feed.local_view();
    let deadline = tokio::time::Instant::now() + WITHIN;
    while !view.is_fresh() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let now = token::unix_now();
    let (alice, bob) = (
        claims("alice", "s-alice", now - 1),
        claims("bob", "s-bob", now - 1),
    );
    assert_eq!(view.check(&alice), Ok(()));

    let revocations = [
        NewRevocation {
            kind: RevocationKind::User,
            subject: "alice".into(),
            not_before: now,
            expires_at: now + 900,
        },
        NewRevocation {
            kind: RevocationKind::Session,
            subject: "s-bob".into(),
            not_before: now,
            expires_at: now + 900,
        },
    ];
    store.insert_revocations(&revocations).await.unwrap();
    feed.revoked(&revocations);
    // Nothing awaited since: no task of the feed has run, yet the view refuses both.
    assert!(view.check(&alice).is_err(), "alice accepted");
    assert!(view.check(&bob).is_err(), "bob accepted");
    // Every call gets the same view.
    assert!(feed.local_view().check(&bob).is_err());
    // The feed brings the same rows a moment later and moves the cursor; nothing else changes.
    let deadline = tokio::time::Instant::now() + WITHIN;
    while view.cursor() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the feed did not follow"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(view.len(), 2);
    assert!(view.check(&alice).is_err(), "alice accepted");
    assert_eq!(
        view.check(&claims("alice", "s-new", now + 1)),
        Ok(()),
        "a token issued after the revocation is good"
    );
}
