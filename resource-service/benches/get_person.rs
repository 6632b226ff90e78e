//! One GetPerson call end to end over loopback gRPC (client, HTTP/2, layers, handler, SQLite),
//! with the token cache on and off: what a call costs, and how much of it is token checking.
//! Uses HS256 so no key server is needed; the `authn` bench prices EdDSA verification alone.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use proto::person::v1::{GetPersonRequest, person_service_client::PersonServiceClient};
use resource_service::{
    Application, Config, Settings, config::TEST_HS256_SECRET, domain::PersonFields,
};
use token::{Audience, Hs256Secret, Issuer, Role, SigningKey};
use tonic::{Request, transport::Channel};

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let secret = Hs256Secret::new(TEST_HS256_SECRET.as_bytes()).expect("secret");
    let token = Issuer::new(
        SigningKey::Hs256(secret),
        Audience::default(),
        Duration::from_secs(3600),
    )
    .expect("issuer")
    .issue("bench", "bench", &[Role::User])
    .expect("token")
    .token;
    let mut group = c.benchmark_group("resource_service");
    for (name, capacity) in [("get_person_cache_hit", 1_000), ("get_person_cache_off", 0)] {
        let (client, id) = runtime.block_on(async {
            let mut config = Config::for_tests();
            config.token_cache_capacity = capacity;
            let settings = Settings::try_from(config).expect("valid settings");
            let app = Application::build(settings).await.expect("build");
            let person = app
                .store()
                .create(
                    &PersonFields::parse("Ann".into(), "ann@example.com".into(), 30)
                        .expect("valid"),
                )
                .await
                .expect("seed");
            let url = format!("http://{}", app.local_addr());
            tokio::spawn(app.run_until_stopped(std::future::pending()));
            let channel = Channel::from_shared(url)
                .expect("url")
                .connect()
                .await
                .expect("connect");
            (PersonServiceClient::new(channel), person.id.0)
        });
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| {
                let mut client = client.clone();
                let token = token.clone();
                async move {
                    let mut request = Request::new(GetPersonRequest { person_id: id });
                    request.metadata_mut().insert(
                        "authorization",
                        format!("Bearer {token}").parse().expect("ascii"),
                    );
                    client.get_person(request).await.expect("call")
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
