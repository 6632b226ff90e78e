//! The cost of a sign-in's password check (argon2id at the OWASP parameters), which bounds how
//! many sign-ins one replica can take per second per core.

use auth_service::password::PasswordHasher;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let hasher = PasswordHasher::new(1, 16, 17).expect("hasher");
    let hash = runtime
        .block_on(hasher.hash("correct horse battery".into(), None))
        .expect("hash");
    let mut group = c.benchmark_group("login");
    group.sample_size(20);
    group.bench_function("argon2id_verify", |b| {
        b.iter(|| {
            runtime
                .block_on(hasher.verify("correct horse battery".into(), Some(hash.clone()), None))
                .expect("verify")
        })
    });
    group.bench_function("argon2id_unknown_user", |b| {
        b.iter(|| {
            runtime
                .block_on(hasher.verify("correct horse battery".into(), None, None))
                .expect("verify")
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
