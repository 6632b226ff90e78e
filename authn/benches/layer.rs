//! What the layer costs per call on a cache hit and on a miss, beside the token check alone
//! (`cargo bench -p token` has the bare Ed25519 check under both).

use std::{convert::Infallible, time::Duration};

use authn::{Access, AuthnLayer, Keys, Policy, TokenCache};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use token::{Audience, Ed25519Key, Issuer, Role, SigningKey, Verifier};
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt, service_fn};

fn bench(c: &mut Criterion) {
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
        .issue(
            "0190c2a4-7e1c-7000-8000-000000000001",
            "alice",
            &[Role::User],
        )
        .expect("issue")
        .token;
    let verifier = Verifier::from_jwks([&key.public_jwk()], &Audience::default());
    let policy = Policy::new(
        "person.v1.PersonService",
        &[("GetPerson", Access::AnyRole(&[Role::User]))],
    );
    let ok =
        service_fn(|_: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::empty())) });
    let request = || {
        Request::builder()
            .uri("/person.v1.PersonService/GetPerson")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .expect("request")
    };

    let mut group = c.benchmark_group("authn");
    // The whole JWT check (header, base64, JSON, claims) without the layer around it.
    group.bench_function("token_verify", |b| {
        b.iter(|| verifier.verify(&token).expect("valid"))
    });
    for (name, cache) in [
        ("layer_cache_hit", TokenCache::new(1_000)),
        ("layer_cache_miss", TokenCache::disabled()),
    ] {
        let layer = AuthnLayer::new(policy.clone(), Keys::fixed(verifier.clone()), cache);
        let mut service = layer.layer(ok);
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let response = service
                        .ready()
                        .await
                        .expect("ready")
                        .call(request())
                        .await
                        .expect("call");
                    assert_eq!(response.status(), 200);
                    assert!(response.headers().get("grpc-status").is_none());
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
