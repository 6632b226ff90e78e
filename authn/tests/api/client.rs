//! The caller's side: `client::BearerLayer` on a real channel to a real server guarded by the
//! interceptor, with tokens the server verifies against a real JWKS endpoint.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::support::{KeyServer, channel, issuer, keys_from};
use authn::{
    Access, Gate, TokenCache,
    client::{BearerLayer, TokenError},
};
use proto::person::v1::{GetPersonRequest, person_service_client::PersonServiceClient};
use token::{Audience, Claims, Ed25519Key, Issuer, Role, unix_now};
use tonic::Code;
use tower::ServiceBuilder;

struct Server {
    addr: SocketAddr,
    issuer: Issuer,
}

/// A person service whose every method needs a signed-in caller, and an issuer it trusts.
async fn server() -> Server {
    let keys = KeyServer::default();
    let key = Ed25519Key::generate();
    keys.publish(key.public_jwk());
    let url = keys.serve().await;
    let gate = Gate::new(keys_from(&url).await, TokenCache::default());
    Server {
        addr: crate::support::serve_interceptor(&gate, Access::SignedIn).await,
        issuer: issuer(&key),
    }
}

impl Server {
    /// A token for `username` issued `age` seconds ago that lives `lifetime` seconds.
    fn token(&self, username: &str, age: i64, lifetime: i64) -> String {
        let audience = Audience::default();
        let iat = unix_now() - age;
        self.issuer
            .sign(&Claims {
                iss: audience.issuer,
                aud: audience.audience,
                sub: "caller".into(),
                iat,
                nbf: iat,
                exp: iat + lifetime,
                jti: format!("{username}-{iat}"),
                roles: vec![Role::User],
                username: username.into(),
                sid: None,
                client_id: None,
            })
            .unwrap()
    }

    /// A client whose calls go through `layer`.
    async fn client(
        &self,
        layer: BearerLayer,
    ) -> PersonServiceClient<authn::client::Bearer<tonic::transport::Channel>> {
        let service = ServiceBuilder::new()
            .layer(layer)
            .service(channel(self.addr).await);
        PersonServiceClient::new(service)
    }
}

/// Who the server says called, or the refusal's code and message.
async fn whoami(
    client: &mut PersonServiceClient<authn::client::Bearer<tonic::transport::Channel>>,
) -> Result<String, (Code, String)> {
    client
        .get_person(GetPersonRequest { person_id: 1 })
        .await
        .map(|r| r.into_inner().name)
        .map_err(|s| (s.code(), s.message().to_owned()))
}

/// A token source that hands out the tokens in `queue` (the last one again when it runs out)
/// after `delay`, counting how often it was asked.
#[derive(Clone)]
struct Queue {
    tokens: Arc<Mutex<Vec<Result<String, TokenError>>>>,
    fetches: Arc<AtomicUsize>,
}

impl Queue {
    fn new(tokens: Vec<Result<String, TokenError>>) -> Self {
        Self {
            tokens: Arc::new(Mutex::new(tokens)),
            fetches: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn layer(&self, delay: Duration) -> BearerLayer {
        let queue = self.clone();
        BearerLayer::new(move || {
            let queue = queue.clone();
            async move {
                queue.fetches.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let mut tokens = queue.tokens.lock().unwrap();
                if tokens.len() > 1 {
                    tokens.remove(0)
                } else {
                    tokens[0].clone()
                }
            }
        })
    }
}

#[tokio::test]
async fn every_call_carries_the_token_and_a_fresh_one_is_fetched_once() {
    let server = server().await;
    let source = Queue::new(vec![Ok(server.token("alice", 0, 600))]);
    let mut client = server.client(source.layer(Duration::ZERO)).await;
    for _ in 0..5 {
        assert_eq!(whoami(&mut client).await, Ok("alice".into()));
    }
    assert_eq!(source.fetches(), 1);
}

#[tokio::test]
async fn concurrent_calls_share_one_fetch() {
    let server = server().await;
    let source = Queue::new(vec![Ok(server.token("alice", 0, 600))]);
    let client = server
        .client(source.layer(Duration::from_millis(100)))
        .await;
    let calls = (0..20).map(|_| {
        let mut client = client.clone();
        async move { whoami(&mut client).await }
    });
    for answer in futures::future::join_all(calls).await {
        assert_eq!(answer, Ok("alice".into()));
    }
    assert_eq!(source.fetches(), 1);
}

#[tokio::test]
async fn a_token_past_four_fifths_of_its_lifetime_is_renewed_before_the_call() {
    let server = server().await;
    // 90 s into a 100 s lifetime: still valid, but due for renewal.
    let source = Queue::new(vec![
        Ok(server.token("first", 90, 100)),
        Ok(server.token("second", 0, 600)),
    ]);
    let mut client = server.client(source.layer(Duration::ZERO)).await;
    assert_eq!(whoami(&mut client).await, Ok("first".into()));
    assert_eq!(whoami(&mut client).await, Ok("second".into()));
    assert_eq!(whoami(&mut client).await, Ok("second".into()));
    assert_eq!(source.fetches(), 2);
}

#[tokio::test]
async fn a_failed_renewal_keeps_the_valid_token_and_is_retried_later() {
    let server = server().await;
    let source = Queue::new(vec![
        Ok(server.token("first", 90, 100)),
        Err(TokenError::unavailable("auth-service is unreachable")),
    ]);
    let mut client = server.client(source.layer(Duration::ZERO)).await;
    for _ in 0..3 {
        assert_eq!(whoami(&mut client).await, Ok("first".into()));
    }
    // One failed renewal; the next waits a second rather than hammering the source.
    assert_eq!(source.fetches(), 2);
}

#[tokio::test]
async fn without_a_token_the_call_fails_locally_with_the_sources_code() {
    let server = server().await;
    for (error, code) in [
        (
            TokenError::unavailable("auth-service is unreachable"),
            Code::Unavailable,
        ),
        (
            TokenError::unauthenticated("the client credentials were refused"),
            Code::Unauthenticated,
        ),
    ] {
        let message = format!("no access token for this call: {}", error.message());
        let source = Queue::new(vec![Err(error)]);
        let mut client = server.client(source.layer(Duration::ZERO)).await;
        assert_eq!(whoami(&mut client).await, Err((code, message.clone())));
        // The next call, right after, fails the same way without asking the source again.
        assert_eq!(whoami(&mut client).await, Err((code, message)));
        assert_eq!(source.fetches(), 1);
    }
}

#[tokio::test]
async fn unusable_tokens_are_refused_before_the_call_is_sent() {
    let server = server().await;
    let expired = server.token("late", 700, 600);
    let mut client = server.client(BearerLayer::forward(expired)).await;
    let (code, message) = whoami(&mut client).await.unwrap_err();
    assert_eq!(code, Code::Unauthenticated);
    assert!(
        message.contains("forwarded access token has expired"),
        "{message}"
    );

    let source = Queue::new(vec![Ok("not-a-jwt".into())]);
    let mut client = server.client(source.layer(Duration::ZERO)).await;
    let (code, message) = whoami(&mut client).await.unwrap_err();
    assert_eq!(code, Code::Unauthenticated);
    assert!(message.contains("expiry cannot be read"), "{message}");
}

#[tokio::test]
async fn a_forwarded_token_is_sent_as_it_came() {
    let server = server().await;
    let mut client = server
        .client(BearerLayer::forward(server.token("bob", 0, 600)))
        .await;
    assert_eq!(whoami(&mut client).await, Ok("bob".into()));
    assert_eq!(whoami(&mut client).await, Ok("bob".into()));
}

#[tokio::test]
async fn a_token_the_server_refuses_is_dropped_and_the_next_call_fetches_another() {
    let server = server().await;
    // Signed with a key the server does not know: refused as UNAUTHENTICATED, as a revoked
    // token is.
    let stranger = Server {
        addr: server.addr,
        issuer: issuer(&Ed25519Key::generate()),
    };
    let source = Queue::new(vec![
        Ok(stranger.token("refused", 0, 600)),
        Ok(server.token("accepted", 0, 600)),
    ]);
    let mut client = server.client(source.layer(Duration::ZERO)).await;
    // Within a second of its fetch a refused token is kept (no fetch per refused call)...
    for _ in 0..2 {
        assert_eq!(
            whoami(&mut client).await.unwrap_err().0,
            Code::Unauthenticated
        );
    }
    assert_eq!(source.fetches(), 1);
    // ...after it, the next refusal drops it, and the call after that has a new token.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        whoami(&mut client).await.unwrap_err().0,
        Code::Unauthenticated
    );
    assert_eq!(whoami(&mut client).await, Ok("accepted".into()));
    assert_eq!(source.fetches(), 2);
}
