//! What following the revocation feed costs a verifier: memory per 100k live revocations
//! (printed, measured as the growth of the process's resident set while one set is filled), and
//! the per-call check against 100k revocations, alone and inside the layer on a cache hit.

use std::{convert::Infallible, time::Duration};

use authn::{
    Access, AuthnLayer, Keys, Policy, RevocationConfig, RevocationSet, Revocations, RevokedSubject,
    TokenCache,
};
use criterion::{Criterion, criterion_group};
use http::{Request, Response};
use proto::auth::v1::{Revocation, RevocationBatch, revocation::Subject};
use token::{Audience, Claims, Ed25519Key, Issuer, Role, SigningKey, Verifier, unix_now};
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt, service_fn};

const LIVE: usize = 100_000;

fn uuid(n: usize) -> String {
    format!("0190c2a4-7e1c-7000-8000-{n:012x}")
}

/// Resident set size in bytes, from /proc (Linux); `None` elsewhere.
fn rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes per revocation that filling one set with `LIVE` of them adds to the resident set.
fn memory_per_revocation(subject: NthId) -> Option<f64> {
    let ids: Vec<(bool, String)> = (0..LIVE).map(subject).collect();
    let before = rss_bytes()?;
    let mut set = RevocationSet::new();
    let now = unix_now();
    for (session, id) in &ids {
        let subject = if *session {
            RevokedSubject::Session(id)
        } else {
            RevokedSubject::User(id)
        };
        set.insert(subject, now, now + 900);
    }
    let after = rss_bytes()?;
    assert_eq!(set.len(), LIVE);
    Some(after.saturating_sub(before) as f64 / LIVE as f64)
}

/// The cases, each measured in a child process of its own so that memory freed by one case
/// cannot be reused, unseen, by the next.
/// The n-th revoked id, and whether it is a session (else a user).
type NthId = fn(usize) -> (bool, String);

const MEMORY_CASES: [(&str, NthId); 3] = [
    ("sessions (UUID sids)", |n| (true, uuid(n))),
    ("users (UUID subs)", |n| (false, uuid(n))),
    ("sessions (other 22-char ids)", |n| {
        (true, format!("sid-{n:018}"))
    }),
];
const MEMORY_CASE_VAR: &str = "AUTHN_BENCH_MEMORY_CASE";

fn report_memory() {
    let Ok(exe) = std::env::current_exe() else {
        println!("revocation memory: cannot find this benchmark's binary, not measured");
        return;
    };
    for (i, (name, _)) in MEMORY_CASES.iter().enumerate() {
        let output = std::process::Command::new(&exe)
            .env(MEMORY_CASE_VAR, i.to_string())
            .output()
            .expect("run the memory case");
        assert!(output.status.success(), "memory case {name} failed");
        let text = String::from_utf8_lossy(&output.stdout);
        match text.trim().parse::<f64>() {
            Ok(bytes) => {
                println!(
                    "revocation memory, {name}: {bytes:.1} bytes per revocation, {:.2} MiB per 100k",
                    bytes * LIVE as f64 / (1024.0 * 1024.0)
                );
                // Loose on purpose (the resident set moves in pages): catches a representation
                // that stopped being compact, not a few bytes.
                assert!(bytes < 200.0, "{name}: {bytes} bytes per revocation");
            }
            Err(_) => println!("revocation memory, {name}: not measured ({})", text.trim()),
        }
    }
}

/// A view holding `LIVE` revoked sessions and users, fed as the stream would.
fn full_view() -> Revocations {
    let revocations = Revocations::manual(RevocationConfig::new(Vec::new()));
    let now = unix_now();
    let batch = RevocationBatch {
        revocations: (0..LIVE)
            .map(|n| Revocation {
                seq: n as i64 + 1,
                subject: Some(if n % 2 == 0 {
                    Subject::SessionId(uuid(n))
                } else {
                    Subject::UserId(uuid(n))
                }),
                not_before: now,
                expires_at: now + 900,
            })
            .collect(),
        cursor: LIVE as i64,
        snapshot: true,
        snapshot_done: true,
        heartbeat_millis: 0,
    };
    revocations.apply(&batch, true);
    revocations
}

fn claims(sid: &str, sub: &str) -> Claims {
    let now = unix_now();
    Claims {
        iss: "i".into(),
        aud: "a".into(),
        sub: sub.into(),
        iat: now + 10,
        nbf: now,
        exp: now + 900,
        jti: "j".into(),
        roles: vec![Role::User],
        username: "alice".into(),
        sid: Some(sid.into()),
        client_id: None,
    }
}

fn bench(c: &mut Criterion) {
    report_memory();
    let view = full_view();
    let revoked = claims(&uuid(0), "someone");
    let clean = claims(&uuid(LIVE + 1), &uuid(LIVE + 2));
    assert!(view.check(&revoked).is_err());
    assert!(view.check(&clean).is_ok());

    let mut group = c.benchmark_group("revocations");
    group.bench_function("check_100k_not_revoked", |b| {
        b.iter(|| view.check(&clean).is_ok())
    });
    group.bench_function("check_100k_revoked", |b| {
        b.iter(|| view.check(&revoked).is_err())
    });
    group.bench_function("check_no_feed", |b| {
        let none = Revocations::none();
        b.iter(|| none.check(&clean).is_ok())
    });

    // The layer on a cache hit with 100k revocations held, beside `authn/layer_cache_hit`.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let key = Ed25519Key::generate();
    let issuer = Issuer::new(
        SigningKey::Ed25519(key.clone()),
        Audience::default(),
        Duration::from_secs(900),
    )
    .expect("issuer");
    let token = issuer
        .issue(&uuid(LIVE + 3), "alice", &[Role::User])
        .expect("issue")
        .token;
    let verifier = Verifier::from_jwks([&key.public_jwk()], &Audience::default());
    let policy = Policy::new(
        "person.v1.PersonService",
        &[("GetPerson", Access::AnyRole(&[Role::User]))],
    );
    let ok =
        service_fn(|_: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::empty())) });
    let layer = AuthnLayer::new(policy, Keys::fixed(verifier), TokenCache::new(1_000))
        .with_revocations(view.clone());
    let mut service = layer.layer(ok);
    group.bench_function("layer_cache_hit_with_100k_revocations", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let request = Request::builder()
                    .uri("/person.v1.PersonService/GetPerson")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Body::empty())
                    .expect("request");
                let response = service
                    .ready()
                    .await
                    .expect("ready")
                    .call(request)
                    .await
                    .expect("call");
                assert!(response.headers().get("grpc-status").is_none());
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(case) = std::env::var(MEMORY_CASE_VAR) {
        let subject = MEMORY_CASES[case.parse::<usize>().expect("case number")].1;
        match memory_per_revocation(subject) {
            Some(bytes) => println!("{bytes}"),
            None => println!("/proc/self/status unavailable"),
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
