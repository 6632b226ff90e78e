//! The key set's age (`authn_jwks_age_seconds`): it counts from the last key set accepted, not
//! from the last answer.

use std::time::Duration;

use authn::{JwksSource, JwksSourceConfig};
use token::{Audience, Ed25519Key};

use crate::support::KeyServer;

#[tokio::test]
async fn an_answer_without_usable_keys_does_not_make_the_key_set_young() {
    let server = KeyServer::default();
    server.publish(Ed25519Key::generate().public_jwk());
    let url = server.serve().await;
    let mut config = JwksSourceConfig::new(vec![url], Audience::default());
    config.refresh_interval = Duration::from_millis(50);
    let keys = JwksSource::start(config).await.unwrap();
    assert_eq!(keys.verifier().key_count(), 1);

    // auth-service keeps answering, but with nothing the verifier can use: the keys held are
    // kept, and they age.
    server.withdraw_all();
    let fetches = server.fetches();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(server.fetches() > fetches + 2, "the refresh kept asking");
    assert_eq!(keys.verifier().key_count(), 1);
    let age = keys.jwks_age().unwrap();
    assert!(age >= Duration::from_millis(500), "age {age:?}");

    // A usable key set again: young again.
    server.publish(Ed25519Key::generate().public_jwk());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let age = keys.jwks_age().unwrap();
    assert!(age < Duration::from_millis(300), "age {age:?}");
}
