//! resource-service with the real auth-service, both in-process on random ports: tokens from
//! one are accepted by the other without any call to auth-service on the request path.

use std::collections::HashMap;

use proto::auth::v1::{
    CreateServiceAccountRequest, GetJwksRequest, IssueClientTokenRequest,
    SetServiceAccountDisabledRequest, SignInRequest, SignUpRequest,
    auth_service_client::AuthServiceClient,
};
use resource_service::Config;
use token::{Audience, Ed25519Key, Jwk, Role};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, transport::Channel};

use crate::{
    access::{
        Rpc, admin_claims, alg_none, assert_role_matrix, assert_unauthenticated, call, tamper,
    },
    helpers::{TestApp, spawn_app_with, with_token},
    jwks::{ed25519_issuer, hs256_with_secret, public_key_as_secret_variants},
};

const PASSWORD: &str = "correct horse battery staple";

/// auth-service with a bootstrap admin `root`.
pub struct Auth {
    pub url: String,
    client: AuthServiceClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn_auth() -> Auth {
    telemetry::init_for_tests();
    let mut config = auth_service::Config::for_tests();
    config.bootstrap_admin_username = Some("root".into());
    config.bootstrap_admin_password = Some(PASSWORD.into());
    let settings = auth_service::Settings::try_from(config).expect("valid settings");
    let app = auth_service::Application::build(settings)
        .await
        .expect("auth-service starts");
    let url = format!("http://{}", app.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    Auth {
        url,
        client: AuthServiceClient::new(channel),
        stop: Some(stop),
        task,
    }
}

impl Auth {
    pub async fn sign_in(&self, login: &str) -> String {
        self.client
            .clone()
            .sign_in(SignInRequest {
                login: login.into(),
                password: PASSWORD.into(),
            })
            .await
            .expect("sign in")
            .into_inner()
            .access_token
    }

    /// Signs up `username` with `role` (granted by the admin) and returns their token.
    async fn token_for(&self, username: &str, role: Role) -> String {
        let admin = self.sign_in("root").await;
        self.client
            .clone()
            .sign_up(with_token(
                SignUpRequest {
                    username: username.into(),
                    email: format!("{username}@example.com"),
                    password: PASSWORD.into(),
                    roles: vec![role.as_str().into()],
                },
                &admin,
            ))
            .await
            .expect("sign up");
        self.sign_in(username).await
    }

    /// Creates a service account with `role` and returns its client id and a token of its own
    /// (the client-credentials grant).
    async fn service_token(&self, name: &str, role: Role) -> (String, String) {
        let admin = self.sign_in("root").await;
        let created = self
            .client
            .clone()
            .create_service_account(with_token(
                CreateServiceAccountRequest {
                    name: name.into(),
                    roles: vec![role.as_str().into()],
                },
                &admin,
            ))
            .await
            .expect("create a service account")
            .into_inner();
        let client_id = created.service_account.unwrap().client_id;
        let token = self
            .client
            .clone()
            .issue_client_token(IssueClientTokenRequest {
                client_id: client_id.clone(),
                client_secret: created.client_secret,
                scope: String::new(),
            })
            .await
            .expect("a client token")
            .into_inner()
            .access_token;
        (client_id, token)
    }

    async fn disable_service_account(&self, client_id: &str) {
        let admin = self.sign_in("root").await;
        self.client
            .clone()
            .set_service_account_disabled(with_token(
                SetServiceAccountDisabledRequest {
                    client_id: client_id.into(),
                    disabled: true,
                },
                &admin,
            ))
            .await
            .expect("disable the service account");
    }

    async fn jwks(&self) -> Vec<Jwk> {
        let keys = self
            .client
            .clone()
            .get_jwks(GetJwksRequest {})
            .await
            .unwrap()
            .into_inner()
            .keys;
        keys.into_iter().map(authn::jwk_from_proto).collect()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }
}

impl Drop for Auth {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// resource-service taking its keys from `auth`; every call verifies (no token cache), so a
/// passing call proves the keys, not a remembered answer.
async fn spawn_resource(auth_urls: Vec<String>) -> TestApp {
    let mut config = Config::for_tests().with_jwks(auth_urls);
    config.token_cache_capacity = 0;
    spawn_app_with(config).await
}

#[tokio::test]
async fn a_token_issued_by_auth_service_is_accepted_by_resource_service() {
    let auth = spawn_auth().await;
    let app = spawn_resource(vec![auth.url.clone()]).await;
    let token = auth.token_for("alice", Role::User).await;
    call(&app, Rpc::List, &token).await.unwrap();
    call(&app, Rpc::Get, &token).await.unwrap();
}

#[tokio::test]
async fn users_moderators_and_admins_from_auth_service_get_exactly_their_rpcs() {
    let auth = spawn_auth().await;
    let app = spawn_resource(vec![auth.url.clone()]).await;
    let mut tokens = HashMap::new();
    tokens.insert(Role::User, auth.token_for("uma", Role::User).await);
    tokens.insert(
        Role::Moderator,
        auth.token_for("moe", Role::Moderator).await,
    );
    tokens.insert(Role::Admin, auth.sign_in("root").await);
    assert_role_matrix(&app, |role| tokens[&role].clone()).await;
}

#[tokio::test]
async fn tokens_forged_against_auth_services_keys_are_unauthenticated() {
    let auth = spawn_auth().await;
    let app = spawn_resource(vec![auth.url.clone()]).await;
    let user = auth.token_for("alice", Role::User).await;
    let audience = Audience::default();

    let promoted = tamper(&user, |c| c["roles"] = serde_json::json!(["admin"]));
    assert_unauthenticated(&app, &promoted, "roles changed in the payload").await;

    let impostor = ed25519_issuer(&Ed25519Key::generate(), audience.clone())
        .issue("u", "alice", &[Role::Admin])
        .unwrap()
        .token;
    let (head, _) = user.rsplit_once('.').unwrap();
    let (_, foreign_sig) = impostor.rsplit_once('.').unwrap();
    assert_unauthenticated(&app, &format!("{head}.{foreign_sig}"), "wrong signature").await;
    assert_unauthenticated(
        &app,
        &impostor,
        "signed by a key auth-service never published",
    )
    .await;

    let published = auth.jwks().await;
    assert!(!published.is_empty());
    for jwk in &published {
        assert_unauthenticated(
            &app,
            &alg_none(&admin_claims(&audience), &jwk.kid),
            "alg none",
        )
        .await;
        for secret in public_key_as_secret_variants(jwk) {
            let confused = hs256_with_secret(&secret, &jwk.kid, &admin_claims(&audience));
            assert_unauthenticated(&app, &confused, "HS256 signed with the public key").await;
        }
    }
}

#[tokio::test]
async fn resource_service_keeps_verifying_after_auth_service_stops() {
    let auth = spawn_auth().await;
    let app = spawn_resource(vec![auth.url.clone()]).await;
    let admin = auth.sign_in("root").await;
    let user = auth.token_for("alice", Role::User).await;
    call(&app, Rpc::List, &user).await.unwrap();
    auth.stop().await;

    // A token never seen before, verified from the cached keys alone.
    call(&app, Rpc::Delete, &admin).await.unwrap();
    // An unknown key id makes the service try auth-service, which is gone: the token is
    // refused, and the keys it had are kept.
    let stranger = ed25519_issuer(&Ed25519Key::generate(), Audience::default())
        .issue("u", "alice", &[Role::User])
        .unwrap()
        .token;
    let refused = call(&app, Rpc::List, &stranger).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    call(&app, Rpc::List, &user).await.unwrap();
    let denied = call(&app, Rpc::Delete, &user).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn keys_come_from_whichever_listed_auth_service_replica_answers() {
    let auth = spawn_auth().await;
    // The first URL refuses connections; the second is the real service.
    let app = spawn_resource(vec!["http://127.0.0.1:1".into(), auth.url.clone()]).await;
    let token = auth.token_for("alice", Role::Moderator).await;
    call(&app, Rpc::Create, &token).await.unwrap();
}

#[tokio::test]
async fn a_service_accounts_token_gets_its_roles_rpcs_until_the_account_is_disabled() {
    let auth = spawn_auth().await;
    let app = spawn_resource(vec![auth.url.clone()]).await;
    let (moderator_id, moderator) = auth.service_token("importer", Role::Moderator).await;
    let (_, plain) = auth.service_token("reader", Role::User).await;
    // Roles decide, whatever the subject (`sa:<client id>`, not a user id).
    call(&app, Rpc::Create, &moderator).await.unwrap();
    call(&app, Rpc::Update, &moderator).await.unwrap();
    let denied = call(&app, Rpc::Delete, &moderator).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    call(&app, Rpc::List, &plain).await.unwrap();
    let denied = call(&app, Rpc::Create, &plain).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Disabled: the revocation feed takes the token back here too.
    auth.disable_service_account(&moderator_id).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match call(&app, Rpc::List, &moderator).await {
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                break;
            }
            Ok(()) => assert!(
                tokio::time::Instant::now() < deadline,
                "resource-service still accepts the disabled account's token"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    call(&app, Rpc::List, &plain).await.unwrap();
}
