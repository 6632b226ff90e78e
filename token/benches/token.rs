//! Cost of issuing and verifying an access token beside the bare Ed25519 operations underneath,
//! so the overhead of our code (JSON, base64, claim checks) over the crypto is visible.

mod support;

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer, Verifier as _};
use token::{Audience, Hs256Secret, Issuer, Role, SigningKey, Verifier};

fn bench(c: &mut Criterion) {
    let eddsa = support::EdDsa::new();

    let mut g = c.benchmark_group("eddsa");
    g.bench_function("raw_sign", |b| {
        b.iter(|| eddsa.raw.sign(black_box(eddsa.signing_input.as_bytes())))
    });
    g.bench_function("issue_token", |b| {
        b.iter(|| {
            eddsa
                .issuer
                .issue(black_box("0190c2a4"), "alice", &[Role::User])
        })
    });
    g.bench_function("raw_verify", |b| {
        b.iter(|| {
            eddsa
                .public
                .verify(black_box(eddsa.signing_input.as_bytes()), &eddsa.signature)
        })
    });
    g.bench_function("verify_token", |b| {
        b.iter(|| {
            eddsa
                .verifier
                .verify(black_box(&eddsa.token))
                .expect("valid")
        })
    });
    g.finish();

    // The JSON share of both: claims written into a pre-sized buffer, and read back.
    let claims = eddsa.verifier.verify(&eddsa.token).expect("valid");
    let json = serde_json::to_vec(&claims).expect("json");
    let mut g = c.benchmark_group("claims");
    g.bench_function("to_json", |b| {
        b.iter(|| {
            let mut buffer = Vec::with_capacity(512);
            serde_json::to_writer(&mut buffer, black_box(&claims)).expect("json");
            buffer
        })
    });
    g.bench_function("from_json", |b| {
        b.iter(|| serde_json::from_slice::<token::Claims>(black_box(&json)).expect("json"))
    });
    g.finish();

    let secret = Hs256Secret::new(&[7u8; 32]).expect("secret");
    let hs_issuer = Issuer::new(
        SigningKey::Hs256(secret.clone()),
        Audience::default(),
        Duration::from_secs(900),
    )
    .expect("issuer");
    let hs_verifier = Verifier::hs256(&secret, &Audience::default());
    let hs_token = hs_issuer
        .issue("1", "alice", &[Role::User])
        .expect("issue")
        .token;
    let mut g = c.benchmark_group("hs256");
    g.bench_function("issue_token", |b| {
        b.iter(|| hs_issuer.issue(black_box("1"), "alice", &[Role::User]))
    });
    g.bench_function("verify_token", |b| {
        b.iter(|| hs_verifier.verify(black_box(&hs_token)).expect("valid"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
