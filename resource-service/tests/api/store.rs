//! One store suite, run against SQLite and against PostgreSQL over a real connection: both
//! backends must behave the same, down to error variants and ordering.

use std::collections::HashSet;

use resource_service::{
    Error,
    domain::{ListQuery, NameFilter, PageSize, Person, PersonId, sample_persons},
    store::Store,
};

use crate::helpers::fields;

macro_rules! store_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $test() { super::$test(crate::helpers::sqlite_store().await).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $test() { super::$test(crate::helpers::postgres_store().await).await })*
        }
    };
}

store_suite!(
    a_created_person_can_be_read_back,
    ids_are_assigned_in_increasing_order,
    a_second_person_with_the_same_email_in_any_case_is_refused,
    racing_inserts_of_one_email_leave_exactly_one_row,
    update_replaces_every_field,
    update_to_another_persons_email_is_refused,
    unknown_ids_are_not_found,
    delete_removes_the_person_once,
    pages_follow_id_order_and_end_without_a_token,
    the_name_filter_is_a_case_insensitive_substring,
    like_wildcards_in_the_filter_match_only_themselves,
    sample_data_is_loaded_only_into_an_empty_table,
    a_walk_sees_every_existing_row_once_while_rows_are_inserted,
    a_closed_store_answers_that_it_is_unavailable,
    many_reads_at_once_each_get_their_own_person,
    a_read_after_a_write_sees_it_while_other_reads_run,
);

async fn a_created_person_can_be_read_back(store: Store) {
    let created = store
        .create(&fields("Ann Smith", "ann@example.com", 34))
        .await
        .unwrap();
    assert_eq!(created.fields, fields("Ann Smith", "ann@example.com", 34));
    assert_eq!(store.get(created.id).await.unwrap(), created);
}

async fn ids_are_assigned_in_increasing_order(store: Store) {
    let a = store
        .create(&fields("A", "a@example.com", 1))
        .await
        .unwrap();
    let b = store
        .create(&fields("B", "b@example.com", 2))
        .await
        .unwrap();
    assert!(a.id.0 > 0);
    assert!(b.id > a.id);
}

async fn a_second_person_with_the_same_email_in_any_case_is_refused(store: Store) {
    store
        .create(&fields("Ann", "ann@example.com", 30))
        .await
        .unwrap();
    let again = store
        .create(&fields("Other Ann", "ANN@Example.com", 31))
        .await;
    assert!(matches!(again, Err(Error::EmailTaken)), "{again:?}");
    let page = store.list(&ListQuery::default()).await.unwrap();
    assert_eq!(page.persons.len(), 1);
}

async fn racing_inserts_of_one_email_leave_exactly_one_row(store: Store) {
    let attempts = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .create(&fields(&format!("Racer {i}"), "race@example.com", 20))
                .await
        })
    });
    let results = futures::future::join_all(attempts).await;
    let created = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    let taken = results
        .iter()
        .filter(|r| matches!(r, Ok(Err(Error::EmailTaken))))
        .count();
    assert_eq!((created, taken), (1, 7), "{results:?}");
}

async fn update_replaces_every_field(store: Store) {
    let p = store
        .create(&fields("Ann", "ann@example.com", 30))
        .await
        .unwrap();
    let updated = store
        .update(p.id, &fields("Ann Jones", "ann.jones@example.com", 31))
        .await
        .unwrap();
    assert_eq!(updated.id, p.id);
    assert_eq!(
        updated.fields,
        fields("Ann Jones", "ann.jones@example.com", 31)
    );
    assert_eq!(store.get(p.id).await.unwrap(), updated);
    // Changing only the case of one's own email is not a conflict with oneself.
    store
        .update(p.id, &fields("Ann Jones", "ANN.JONES@example.com", 31))
        .await
        .unwrap();
}

async fn update_to_another_persons_email_is_refused(store: Store) {
    store
        .create(&fields("Ann", "ann@example.com", 30))
        .await
        .unwrap();
    let bob = store
        .create(&fields("Bob", "bob@example.com", 40))
        .await
        .unwrap();
    let result = store
        .update(bob.id, &fields("Bob", "Ann@example.com", 40))
        .await;
    assert!(matches!(result, Err(Error::EmailTaken)), "{result:?}");
    assert_eq!(
        store.get(bob.id).await.unwrap().fields.email.as_ref(),
        "bob@example.com"
    );
}

async fn unknown_ids_are_not_found(store: Store) {
    let nobody = PersonId(999_999);
    assert!(matches!(store.get(nobody).await, Err(Error::PersonNotFound(id)) if id == nobody));
    assert!(matches!(
        store.update(nobody, &fields("X", "x@example.com", 1)).await,
        Err(Error::PersonNotFound(_))
    ));
    assert!(matches!(
        store.delete(nobody).await,
        Err(Error::PersonNotFound(_))
    ));
}

async fn delete_removes_the_person_once(store: Store) {
    let p = store
        .create(&fields("Ann", "ann@example.com", 30))
        .await
        .unwrap();
    store.delete(p.id).await.unwrap();
    assert!(matches!(
        store.get(p.id).await,
        Err(Error::PersonNotFound(_))
    ));
    assert!(matches!(
        store.delete(p.id).await,
        Err(Error::PersonNotFound(_))
    ));
    // The email is free again.
    store
        .create(&fields("Ann", "ann@example.com", 30))
        .await
        .unwrap();
}

async fn pages_follow_id_order_and_end_without_a_token(store: Store) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let p = store
            .create(&fields(&format!("P{i}"), &format!("p{i}@example.com"), i))
            .await
            .unwrap();
        ids.push(p.id);
    }
    let size = PageSize::parse(2).unwrap();
    let first = store
        .list(&ListQuery {
            size,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        first.persons.iter().map(|p| p.id).collect::<Vec<_>>(),
        ids[..2]
    );
    let second = store
        .list(&ListQuery {
            after: first.next.map(|t| t.after),
            size,
            name_filter: None,
        })
        .await
        .unwrap();
    assert_eq!(
        second.persons.iter().map(|p| p.id).collect::<Vec<_>>(),
        ids[2..4]
    );
    let last = store
        .list(&ListQuery {
            after: second.next.map(|t| t.after),
            size,
            name_filter: None,
        })
        .await
        .unwrap();
    assert_eq!(
        last.persons.iter().map(|p| p.id).collect::<Vec<_>>(),
        ids[4..]
    );
    assert_eq!(last.next, None);
    // A page that ends exactly at the last row has no next token either.
    let exact = store
        .list(&ListQuery {
            size: PageSize::parse(5).unwrap(),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!((exact.persons.len(), exact.next), (5, None));
}

async fn names_matching(store: &Store, filter: &str) -> Vec<String> {
    let query = ListQuery {
        name_filter: NameFilter::parse(filter).unwrap(),
        ..ListQuery::default()
    };
    let page = store.list(&query).await.unwrap();
    page.persons
        .into_iter()
        .map(|p| p.fields.name.as_ref().to_owned())
        .collect()
}

async fn the_name_filter_is_a_case_insensitive_substring(store: Store) {
    for (name, email) in [
        ("Ann Smith", "ann@example.com"),
        ("Joanna Lee", "jo@example.com"),
        ("Bob Jones", "bob@example.com"),
        ("Émile Zola", "emile@example.com"),
    ] {
        store.create(&fields(name, email, 30)).await.unwrap();
    }
    assert_eq!(
        names_matching(&store, "ANN").await,
        ["Ann Smith", "Joanna Lee"]
    );
    assert_eq!(names_matching(&store, "jones").await, ["Bob Jones"]);
    assert_eq!(names_matching(&store, "émile").await, ["Émile Zola"]);
    assert!(names_matching(&store, "nobody").await.is_empty());
    assert_eq!(names_matching(&store, "").await.len(), 4);
}

async fn like_wildcards_in_the_filter_match_only_themselves(store: Store) {
    for (name, email) in [
        ("100% Real", "real@example.com"),
        ("1000 Real", "fake@example.com"),
        ("a_b", "ab1@example.com"),
        ("axb", "ab2@example.com"),
        ("back\\slash", "bs@example.com"),
    ] {
        store.create(&fields(name, email, 30)).await.unwrap();
    }
    assert_eq!(names_matching(&store, "0%").await, ["100% Real"]);
    assert_eq!(names_matching(&store, "a_b").await, ["a_b"]);
    assert_eq!(names_matching(&store, "%").await, ["100% Real"]);
    assert_eq!(names_matching(&store, "\\").await, ["back\\slash"]);
}

async fn sample_data_is_loaded_only_into_an_empty_table(store: Store) {
    let sample = sample_persons();
    assert_eq!(
        store.load_if_empty(&sample).await.unwrap(),
        sample.len() as u64
    );
    assert_eq!(store.load_if_empty(&sample).await.unwrap(), 0);
    let all = store.list(&ListQuery::default()).await.unwrap();
    assert_eq!(all.persons.len(), sample.len());
}

async fn a_walk_sees_every_existing_row_once_while_rows_are_inserted(store: Store) {
    let mut existing = HashSet::new();
    for i in 0..60 {
        let p = store
            .create(&fields(
                &format!("Old {i}"),
                &format!("old{i}@example.com"),
                30,
            ))
            .await
            .unwrap();
        existing.insert(p.id);
    }
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                store
                    .create(&fields(
                        &format!("New {i}"),
                        &format!("new{i}@example.com"),
                        30,
                    ))
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let seen = walk(&store, 7).await;
    writer.await.unwrap();
    assert_walk_complete(&seen, &existing);
}

async fn a_closed_store_answers_that_it_is_unavailable(store: Store) {
    let p = store
        .create(&fields("Ann", "ann@example.com", 30))
        .await
        .unwrap();
    store.close().await;
    let read = store.get(p.id).await;
    assert!(matches!(read, Err(Error::StoreUnavailable(_))), "{read:?}");
}

/// `count` persons named P0, P1, … with their own emails.
async fn numbered_persons(store: &Store, count: i32) -> Vec<Person> {
    let mut persons = Vec::new();
    for i in 0..count {
        let p = store
            .create(&fields(
                &format!("P{i}"),
                &format!("p{i}@example.com"),
                20 + i,
            ))
            .await
            .unwrap();
        persons.push(p);
    }
    persons
}

async fn many_reads_at_once_each_get_their_own_person(store: Store) {
    let persons = numbered_persons(&store, 5).await;
    let missing = PersonId(persons.last().unwrap().id.0 + 1000);
    let reads = (0..120).map(|i| {
        let store = store.clone();
        let wanted = persons.get(i % 6).cloned();
        let id = wanted.as_ref().map_or(missing, |p| p.id);
        tokio::spawn(async move { (wanted, store.get(id).await) })
    });
    for read in futures::future::join_all(reads).await {
        match read.unwrap() {
            (Some(wanted), got) => assert_eq!(got.unwrap(), wanted),
            (None, got) => assert!(matches!(got, Err(Error::PersonNotFound(id)) if id == missing)),
        }
    }
}

async fn a_read_after_a_write_sees_it_while_other_reads_run(store: Store) {
    let p = store
        .create(&fields("Ann", "ann@example.com", 30))
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    store.get(p.id).await.unwrap();
                }
            })
        })
        .collect();
    for age in 31..61 {
        let updated = store
            .update(p.id, &fields("Ann", "ann@example.com", age))
            .await
            .unwrap();
        assert_eq!(store.get(p.id).await.unwrap(), updated);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
}

/// Reads by id that wait together share one query: with a lock holding every query back,
/// 40 reads put only two queries in front of PostgreSQL (not one per pooled connection), and
/// once the lock goes every read gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_by_id_waiting_together_share_a_query_on_postgres() {
    let url = crate::helpers::fresh_postgres_database().await;
    let store = Store::connect(&url).await.unwrap();
    let persons = numbered_persons(&store, 4).await;
    use sqlx::Connection as _;
    let mut locker = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut watcher = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE persons IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let reads: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            let wanted = persons[i % persons.len()].clone();
            tokio::spawn(async move { (store.get(wanted.id).await, wanted) })
        })
        .collect();
    // Every read has had time to start its query or to queue behind one.
    let mut most = 0;
    for _ in 0..30 {
        let (blocked,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE '%FROM persons WHERE person_id%'",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        most = most.max(blocked);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    for read in reads {
        let (got, wanted) = read.await.unwrap();
        assert_eq!(got.unwrap(), wanted);
    }
    assert_eq!(most, 2, "queries waiting on the lock at once");
}

/// Every id the walk returned, page by page.
async fn walk(store: &Store, size: i32) -> Vec<PersonId> {
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(&ListQuery {
                after,
                size: PageSize::parse(size).unwrap(),
                name_filter: None,
            })
            .await
            .unwrap();
        seen.extend(page.persons.iter().map(|p| p.id));
        tokio::task::yield_now().await;
        match page.next {
            Some(token) => after = Some(token.after),
            None => return seen,
        }
    }
}

/// Ids strictly increase (so none repeats), and every row that existed before the walk is in it.
pub fn assert_walk_complete(seen: &[PersonId], existing: &HashSet<PersonId>) {
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "ids out of order or repeated: {seen:?}"
    );
    let seen: HashSet<_> = seen.iter().copied().collect();
    let missing: Vec<_> = existing.difference(&seen).collect();
    assert!(missing.is_empty(), "rows skipped: {missing:?}");
}

#[tokio::test]
async fn migrations_run_again_on_an_already_migrated_database() {
    let url = resource_service::Config::for_tests().database_url.unwrap();
    let url = secrecy::ExposeSecret::expose_secret(&url).to_owned();
    let first = Store::connect(&url).await.unwrap();
    first
        .create(&fields("Ann", "ann@example.com", 30))
        .await
        .unwrap();
    let second = Store::connect(&url).await.unwrap();
    assert_eq!(
        second
            .list(&ListQuery::default())
            .await
            .unwrap()
            .persons
            .len(),
        1
    );
    let pg = crate::helpers::fresh_postgres_database().await;
    Store::connect(&pg).await.unwrap();
    Store::connect(&pg).await.unwrap();
}

#[tokio::test]
async fn an_in_memory_sqlite_database_keeps_its_rows_across_calls() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    for i in 0..20 {
        store
            .create(&fields(&format!("P{i}"), &format!("p{i}@example.com"), 1))
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .list(&ListQuery::default())
            .await
            .unwrap()
            .persons
            .len(),
        20
    );
}

#[tokio::test]
async fn replicas_starting_together_on_postgres_migrate_once_and_load_samples_once() {
    let url = crate::helpers::fresh_postgres_database().await;
    let replicas = (0..3).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let store = Store::connect(&url).await.unwrap();
            store.load_if_empty(&sample_persons()).await.unwrap()
        })
    });
    let loaded: Vec<u64> = futures::future::join_all(replicas)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let n = sample_persons().len() as u64;
    assert_eq!(loaded.iter().sum::<u64>(), n, "{loaded:?}");
    let store = Store::connect(&url).await.unwrap();
    let all = store.list(&ListQuery::default()).await.unwrap();
    assert_eq!(all.persons.len() as u64, n);
}

/// A rolling upgrade's other half: a replica of this version restarting (or rolled back to)
/// after a newer replica migrated the database still starts.
#[tokio::test]
async fn a_database_migrated_by_a_newer_version_still_opens() {
    const SQL: &str = "INSERT INTO _sqlx_migrations \
         (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from the next version', TRUE, $1, 0)";
    let sqlite = format!(
        "sqlite://{}?mode=rwc",
        std::env::temp_dir()
            .join(format!("resource-newer-{}.db", uuid::Uuid::new_v4()))
            .display()
    );
    let postgres = crate::helpers::fresh_postgres_database().await;
    for url in [sqlite, postgres] {
        Store::connect(&url).await.unwrap();
        if url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query(SQL)
                .bind(vec![0u8; 48])
                .execute(&pool)
                .await
                .unwrap();
        } else {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query(SQL)
                .bind(vec![0u8; 48])
                .execute(&pool)
                .await
                .unwrap();
        }
        Store::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e:#}"));
    }
}

/// The pool pings a connection before use only when it sat idle (not on every read): one that
/// PostgreSQL dropped meanwhile (a restart, an administrator, an idle timeout) is still found
/// and replaced before a read is sent on it, so the read is served.
#[tokio::test]
async fn a_connection_postgresql_dropped_while_idle_is_replaced_before_a_read() {
    use sqlx::Connection;

    let url = crate::helpers::fresh_postgres_database().await;
    let store = Store::connect_with(&url, 1).await.unwrap();
    let ann = store
        .create(&fields("Ann", "ann@example.com", 30))
        .await
        .unwrap();
    assert_eq!(store.get(ann.id).await.unwrap(), ann);

    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    // A connection closed moments ago (the test helper's, sqlx's own) stays listed until its
    // backend has exited: wait until only the pool's is left (a pool holding two still fails
    // the assertion below, after the wait).
    for _ in 0..50 {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        if others <= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(ended, [true], "the pool's one connection");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    assert_eq!(store.get(ann.id).await.unwrap(), ann);
}
