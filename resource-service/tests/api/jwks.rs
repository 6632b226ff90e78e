//! EdDSA tokens checked with keys from a JWKS endpoint. A stand-in auth-service that only
//! publishes keys we hold lets these tests sign anything: expired tokens, foreign audiences,
//! rotated keys. `auth_service.rs` runs the same checks against the real auth-service.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use proto::auth::v1::{
    self as pb, GetJwksRequest, GetJwksResponse, GetMeRequest, GetMeResponse, ListUsersRequest,
    ListUsersResponse, SetUserRolesRequest, SetUserRolesResponse, SignInRequest, SignInResponse,
    SignUpRequest, SignUpResponse,
    auth_service_server::{AuthService, AuthServiceServer},
};
use resource_service::Config;
use token::{Audience, Ed25519Key, Issuer, Jwk, Role, SigningKey, unix_now};
use tokio::sync::oneshot;
use tonic::{Code, Request, Response, Status, transport::server::TcpIncoming};

use crate::{
    access::{
        ALL_RPCS, Rpc, admin_claims, alg_none, assert_role_matrix, assert_unauthenticated, call,
        tamper,
    },
    helpers::{TestApp, spawn_app_with},
};

/// Publishes whatever keys the test puts in `keys`, and counts how often it was asked.
#[derive(Clone, Default)]
pub struct KeyServer {
    keys: Arc<Mutex<Vec<Jwk>>>,
    fetches: Arc<AtomicUsize>,
}

impl KeyServer {
    pub fn publish(&self, jwk: Jwk) {
        self.keys.lock().unwrap().push(jwk);
    }

    pub fn withdraw_all(&self) {
        self.keys.lock().unwrap().clear();
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Serves on a random port until the returned sender is dropped or fired.
    pub async fn serve(&self) -> (String, oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let service = AuthServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = rx.await;
                }),
        );
        (url, tx)
    }
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("this stand-in only publishes keys"))
}

#[tonic::async_trait]
impl AuthService for KeyServer {
    type WatchRevocationsStream =
        futures::stream::Empty<Result<proto::auth::v1::RevocationBatch, Status>>;

    async fn watch_revocations(
        &self,
        _: Request<proto::auth::v1::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        unimplemented()
    }
    async fn create_service_account(
        &self,
        _: Request<pb::CreateServiceAccountRequest>,
    ) -> Result<Response<pb::CreateServiceAccountResponse>, Status> {
        unimplemented()
    }
    async fn list_service_accounts(
        &self,
        _: Request<pb::ListServiceAccountsRequest>,
    ) -> Result<Response<pb::ListServiceAccountsResponse>, Status> {
        unimplemented()
    }
    async fn set_service_account_disabled(
        &self,
        _: Request<pb::SetServiceAccountDisabledRequest>,
    ) -> Result<Response<pb::SetServiceAccountDisabledResponse>, Status> {
        unimplemented()
    }
    async fn delete_service_account(
        &self,
        _: Request<pb::DeleteServiceAccountRequest>,
    ) -> Result<Response<pb::DeleteServiceAccountResponse>, Status> {
        unimplemented()
    }
    async fn rotate_service_account_secret(
        &self,
        _: Request<pb::RotateServiceAccountSecretRequest>,
    ) -> Result<Response<pb::RotateServiceAccountSecretResponse>, Status> {
        unimplemented()
    }
    async fn issue_client_token(
        &self,
        _: Request<pb::IssueClientTokenRequest>,
    ) -> Result<Response<pb::IssueClientTokenResponse>, Status> {
        unimplemented()
    }
    async fn introspect_token(
        &self,
        _: Request<pb::IntrospectTokenRequest>,
    ) -> Result<Response<pb::ValidateTokenResponse>, Status> {
        unimplemented()
    }
    async fn get_jwks(
        &self,
        _: Request<GetJwksRequest>,
    ) -> Result<Response<GetJwksResponse>, Status> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let keys = self
            .keys
            .lock()
            .unwrap()
            .iter()
            .map(authn::jwk_to_proto)
            .collect();
        Ok(Response::new(GetJwksResponse {
            keys,
            max_age_seconds: 60,
        }))
    }
    async fn sign_up(&self, _: Request<SignUpRequest>) -> Result<Response<SignUpResponse>, Status> {
        unimplemented()
    }
    async fn sign_in(&self, _: Request<SignInRequest>) -> Result<Response<SignInResponse>, Status> {
        unimplemented()
    }
    async fn get_me(&self, _: Request<GetMeRequest>) -> Result<Response<GetMeResponse>, Status> {
        unimplemented()
    }
    async fn list_users(
        &self,
        _: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        unimplemented()
    }
    async fn set_user_roles(
        &self,
        _: Request<SetUserRolesRequest>,
    ) -> Result<Response<SetUserRolesResponse>, Status> {
        unimplemented()
    }
    async fn refresh(
        &self,
        _: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        unimplemented()
    }
    async fn sign_out(
        &self,
        _: Request<pb::SignOutRequest>,
    ) -> Result<Response<pb::SignOutResponse>, Status> {
        unimplemented()
    }
    async fn change_password(
        &self,
        _: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        unimplemented()
    }
    async fn validate_token(
        &self,
        _: Request<pb::ValidateTokenRequest>,
    ) -> Result<Response<pb::ValidateTokenResponse>, Status> {
        unimplemented()
    }
    async fn list_sessions(
        &self,
        _: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        unimplemented()
    }
    async fn end_session(
        &self,
        _: Request<pb::EndSessionRequest>,
    ) -> Result<Response<pb::EndSessionResponse>, Status> {
        unimplemented()
    }
    async fn set_user_disabled(
        &self,
        _: Request<pb::SetUserDisabledRequest>,
    ) -> Result<Response<pb::SetUserDisabledResponse>, Status> {
        unimplemented()
    }
    async fn rotate_signing_key(
        &self,
        _: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        unimplemented()
    }
    async fn clear_sign_in_throttle(
        &self,
        _: Request<proto::auth::v1::ClearSignInThrottleRequest>,
    ) -> Result<Response<proto::auth::v1::ClearSignInThrottleResponse>, Status> {
        unimplemented()
    }
}

pub fn ed25519_issuer(key: &Ed25519Key, audience: Audience) -> Issuer {
    Issuer::new(
        SigningKey::Ed25519(key.clone()),
        audience,
        std::time::Duration::from_secs(900),
    )
    .unwrap()
}

/// An HS256 token whose secret is `secret` and whose header names `kid`: the key-confusion attack.
pub fn hs256_with_secret(secret: &[u8], kid: &str, claims: &token::Claims) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// Every way to turn a public Ed25519 key into an HMAC secret that a confused verifier might use.
pub fn public_key_as_secret_variants(jwk: &Jwk) -> Vec<Vec<u8>> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    vec![
        URL_SAFE_NO_PAD.decode(&jwk.x).unwrap(),
        jwk.x.as_bytes().to_vec(),
        serde_json::to_vec(jwk).unwrap(),
    ]
}

struct Setup {
    app: TestApp,
    keys: KeyServer,
    key: Ed25519Key,
    _stop: oneshot::Sender<()>,
}

async fn setup() -> Setup {
    let keys = KeyServer::default();
    let key = Ed25519Key::generate();
    keys.publish(key.public_jwk());
    let (url, stop) = keys.serve().await;
    let app = spawn_app_with(Config::for_tests().with_jwks(vec![url])).await;
    Setup {
        app,
        keys,
        key,
        _stop: stop,
    }
}

#[tokio::test]
async fn eddsa_tokens_from_the_published_key_get_their_roles() {
    let s = setup().await;
    let issuer = ed25519_issuer(&s.key, Audience::default());
    assert_role_matrix(&s.app, |role| {
        issuer.issue("u", "alice", &[role]).unwrap().token
    })
    .await;
}

#[tokio::test]
async fn forged_and_stale_eddsa_tokens_are_unauthenticated() {
    let s = setup().await;
    let audience = Audience::default();
    let issuer = ed25519_issuer(&s.key, audience.clone());
    let user = issuer.issue("u", "alice", &[Role::User]).unwrap().token;
    let app = &s.app;

    let promoted = tamper(&user, |c| c["roles"] = serde_json::json!(["admin"]));
    assert_unauthenticated(app, &promoted, "roles changed in the payload").await;

    // The real header and payload with another key's signature.
    let other = ed25519_issuer(&Ed25519Key::generate(), audience.clone())
        .issue("u", "alice", &[Role::User])
        .unwrap()
        .token;
    let (head, _) = user.rsplit_once('.').unwrap();
    let (_, foreign_sig) = other.rsplit_once('.').unwrap();
    assert_unauthenticated(app, &format!("{head}.{foreign_sig}"), "wrong signature").await;
    assert_unauthenticated(app, &other, "signed by an unpublished key").await;

    let sign = |change: &dyn Fn(&mut token::Claims)| {
        let mut claims = admin_claims(&audience);
        change(&mut claims);
        issuer.sign(&claims).unwrap()
    };
    let expired = sign(&|c| {
        (c.iat, c.nbf, c.exp) = (unix_now() - 7200, unix_now() - 7200, unix_now() - 3600)
    });
    assert_unauthenticated(app, &expired, "expired").await;
    assert_unauthenticated(app, &sign(&|c| c.nbf = unix_now() + 3600), "not valid yet").await;
    assert_unauthenticated(
        app,
        &sign(&|c| c.aud = "another-api".into()),
        "another audience",
    )
    .await;
    assert_unauthenticated(
        app,
        &sign(&|c| c.iss = "evil-issuer".into()),
        "another issuer",
    )
    .await;

    let unsigned = alg_none(&admin_claims(&audience), s.key.kid());
    assert_unauthenticated(app, &unsigned, "alg none").await;

    for secret in public_key_as_secret_variants(&s.key.public_jwk()) {
        let confused = hs256_with_secret(&secret, s.key.kid(), &admin_claims(&audience));
        assert_unauthenticated(app, &confused, "HS256 signed with the public key").await;
    }
}

#[tokio::test]
async fn a_key_published_after_start_is_fetched_when_a_token_names_it() {
    let s = setup().await;
    let fetches_at_start = s.keys.fetches();
    let next = Ed25519Key::generate();
    s.keys.publish(next.public_jwk());
    let token = ed25519_issuer(&next, Audience::default())
        .issue("u", "alice", &[Role::Admin])
        .unwrap()
        .token;
    call(&s.app, Rpc::Delete, &token).await.unwrap();
    assert_eq!(s.keys.fetches(), fetches_at_start + 1);
}

#[tokio::test]
async fn a_flood_of_unknown_key_ids_causes_at_most_one_refetch() {
    let s = setup().await;
    let fetches_at_start = s.keys.fetches();
    let calls = (0..30).map(|_| {
        let token = ed25519_issuer(&Ed25519Key::generate(), Audience::default())
            .issue("u", "alice", &[Role::User])
            .unwrap()
            .token;
        let app = &s.app;
        async move { call(app, Rpc::List, &token).await.map_err(|s| s.code()) }
    });
    for result in futures::future::join_all(calls).await {
        assert_eq!(result, Err(Code::Unauthenticated));
    }
    // The background refresh runs every 60 s, so within this test any extra fetch came from
    // the unknown key ids; the cooldown allows one.
    assert!(
        s.keys.fetches() <= fetches_at_start + 1,
        "{} fetches",
        s.keys.fetches() - fetches_at_start
    );
}

#[tokio::test]
async fn with_no_keys_yet_calls_are_unavailable_not_unauthenticated() {
    // Nothing listens on port 1: the service starts, but has no keys.
    let app =
        spawn_app_with(Config::for_tests().with_jwks(vec!["http://127.0.0.1:1".into()])).await;
    let token = ed25519_issuer(&Ed25519Key::generate(), Audience::default())
        .issue("u", "alice", &[Role::User])
        .unwrap()
        .token;
    for rpc in ALL_RPCS {
        let code = call(&app, rpc, &token).await.map_err(|s| s.code());
        assert_eq!(code, Err(Code::Unavailable), "{rpc:?}");
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing
    );
}

#[tokio::test]
async fn an_empty_key_set_never_replaces_keys_that_still_verify() {
    let s = setup().await;
    let issuer = ed25519_issuer(&s.key, Audience::default());
    s.keys.withdraw_all();
    let fetches_at_start = s.keys.fetches();
    // An unknown key id makes the service refetch, and the answer is empty.
    let stranger = ed25519_issuer(&Ed25519Key::generate(), Audience::default())
        .issue("u", "alice", &[Role::User])
        .unwrap()
        .token;
    let code = call(&s.app, Rpc::List, &stranger)
        .await
        .map_err(|s| s.code());
    assert_eq!(code, Err(Code::Unauthenticated));
    assert_eq!(s.keys.fetches(), fetches_at_start + 1);
    // A fresh token (never cached) from the key we already had still verifies.
    let token = issuer.issue("u", "alice", &[Role::User]).unwrap().token;
    call(&s.app, Rpc::List, &token).await.unwrap();
}

#[tokio::test]
async fn a_withdrawn_key_stops_working_even_for_tokens_already_cached() {
    let s = setup().await;
    let old = ed25519_issuer(&s.key, Audience::default())
        .issue("u", "alice", &[Role::User])
        .unwrap()
        .token;
    // Verified once, so it sits in the token cache.
    call(&s.app, Rpc::List, &old).await.unwrap();
    call(&s.app, Rpc::List, &old).await.unwrap();

    // The old key is withdrawn and a new one published; a token under the new key makes the
    // service refetch and learn both facts.
    let next = Ed25519Key::generate();
    s.keys.withdraw_all();
    s.keys.publish(next.public_jwk());
    let fresh = ed25519_issuer(&next, Audience::default())
        .issue("u", "bob", &[Role::User])
        .unwrap()
        .token;
    call(&s.app, Rpc::List, &fresh).await.unwrap();

    let code = call(&s.app, Rpc::List, &old).await.map_err(|s| s.code());
    assert_eq!(code, Err(Code::Unauthenticated));
}
