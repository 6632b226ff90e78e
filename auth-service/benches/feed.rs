//! The revocation feed at scale: many verifiers (`authn` followers, each on its own HTTP/2
//! connection) follow one auth-service replica while revocations commit at a steady rate through
//! another connection to the database (as another replica's sign-outs would), and the lag from
//! the start of each commit until each follower has applied it is reported as p50/p99/max.
//!
//! `cargo bench -p auth-service --bench feed` runs 100 followers at 1,000 revocations/s for 10 s
//! (on PostgreSQL when `DATABASE_URL` is set, else on SQLite); under `cargo test` it runs a few
//! followers for a second, to keep the harness alive. Optional arguments after `--`:
//! `--followers N --rate N --seconds N --batch N` (revocations per transaction).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use auth_service::{
    Application, Config, Settings,
    store::{self, NewRevocation, RevocationKind},
};
use authn::{RevocationConfig, RevocationFollower, Revocations};
use tokio::sync::Mutex;

struct Options {
    followers: usize,
    rate: u64,
    seconds: u64,
    batch: u64,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let mut options = if full {
        Options {
            followers: 100,
            rate: 1_000,
            seconds: 10,
            batch: 10,
        }
    } else {
        Options {
            followers: 5,
            rate: 100,
            seconds: 1,
            batch: 10,
        }
    };
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    if let Some(n) = value("--followers") {
        options.followers = n as usize;
    }
    if let Some(n) = value("--rate") {
        options.rate = n;
    }
    if let Some(n) = value("--seconds") {
        options.seconds = n;
    }
    if let Some(n) = value("--batch") {
        options.batch = n.max(1);
    }
    options
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(options));
}

async fn run(options: Options) {
    let (url, backend) = match std::env::var("DATABASE_URL") {
        Ok(_) => (
            testdb::create_database("auth_feed_bench").await,
            "PostgreSQL",
        ),
        Err(_) => {
            let file =
                std::env::temp_dir().join(format!("auth-feed-bench-{}.db", uuid::Uuid::new_v4()));
            (format!("sqlite://{}", file.display()), "SQLite")
        }
    };
    let mut config = Config::for_tests();
    config.database_url = Some(url.clone().into());
    if backend == "PostgreSQL" {
        // Base64 of 32 bytes: PostgreSQL needs a key-encryption key; this one seals nothing real.
        config.key_encryption_key = Some("KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=".into());
    }
    let app = Application::build(Settings::try_from(config).expect("valid settings"))
        .await
        .expect("auth-service starts");
    let auth_url = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    let followers: Vec<Revocations> = (0..options.followers)
        .map(|_| RevocationFollower::start(RevocationConfig::new(vec![auth_url.clone()])))
        .collect::<Result<_, _>>()
        .expect("followers start");
    let synced = Instant::now();
    while !followers.iter().all(Revocations::is_fresh) {
        assert!(
            synced.elapsed() < Duration::from_secs(30),
            "followers never received their snapshot"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // (last seq of a commit, when the commit began), in commit order.
    let commits: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    let writer = {
        let store = store::connect(&url, 4).await.expect("writer connects");
        let commits = commits.clone();
        let per_second = options.rate / options.batch;
        let total = per_second * options.seconds;
        let batch = options.batch;
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_secs_f64(1.0 / per_second.max(1) as f64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for _ in 0..total {
                tick.tick().await;
                let now = token::unix_now();
                let rows: Vec<NewRevocation> = (0..batch)
                    .map(|_| NewRevocation {
                        kind: RevocationKind::Session,
                        subject: uuid::Uuid::new_v4().to_string(),
                        not_before: now,
                        expires_at: now + 900,
                    })
                    .collect();
                let began = Instant::now();
                let seq = store.insert_revocations(&rows).await.expect("insert");
                commits.lock().await.push((seq, began));
            }
        })
    };

    // Sample every follower's cursor every millisecond; a commit reached a follower when its
    // cursor passed the commit's last seq.
    let mut lags = Vec::new();
    let mut next = vec![0usize; followers.len()];
    let started = Instant::now();
    let deadline = Duration::from_secs(options.seconds + 30);
    loop {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = Instant::now();
        let commits = commits.lock().await;
        for (follower, next) in followers.iter().zip(next.iter_mut()) {
            let cursor = follower.cursor();
            while *next < commits.len() && commits[*next].0 <= cursor {
                lags.push(now - commits[*next].1);
                *next += 1;
            }
        }
        let all_in = writer.is_finished() && next.iter().all(|&n| n == commits.len());
        if all_in {
            break;
        }
        assert!(
            started.elapsed() < deadline,
            "followers fell behind for good"
        );
    }
    let committed = commits.lock().await.len() as u64 * options.batch;
    let elapsed = started.elapsed();
    lags.sort();
    println!(
        "\nrevocation feed: {} followers of one auth-service replica on {backend}, {} revocations \
         committed in {:.1} s ({} per transaction), {} arrivals measured",
        options.followers,
        committed,
        elapsed.as_secs_f64(),
        options.batch,
        lags.len()
    );
    println!("| lag from commit start to follower | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!(
        "| {} followers, {}/s | {} | {} | {} |",
        options.followers,
        options.rate,
        ms(percentile(&lags, 50.0)),
        ms(percentile(&lags, 99.0)),
        ms(lags.last().copied().unwrap_or_default())
    );
    drop(followers);
    let _ = stop.send(());
    let _ = server.await;
}
