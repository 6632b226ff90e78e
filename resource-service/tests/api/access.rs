//! Who may call what: the role matrix, and every forged or stale token refused with
//! UNAUTHENTICATED. These run with HS256 tokens minted here; `auth_service.rs` repeats the
//! important ones with tokens from a real auth-service.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use proto::person::v1::{
    CreatePersonRequest, DeletePersonRequest, GetPersonRequest, ListPersonsRequest,
    UpdatePersonRequest,
};
use token::{Audience, Claims, Hs256Secret, Issuer, Role, SigningKey, unix_now};
use tonic::{Code, Request, Status};

use crate::helpers::{TestApp, hs256_issuer, hs256_token, spawn_app, with_token};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    List,
    Get,
    Create,
    Update,
    Delete,
}

pub const ALL_RPCS: [Rpc; 5] = [Rpc::List, Rpc::Get, Rpc::Create, Rpc::Update, Rpc::Delete];

/// Calls `rpc` on a person seeded for this call, with the token (if any) in the given header.
pub async fn call_with(
    app: &TestApp,
    rpc: Rpc,
    header: Option<(&str, String)>,
) -> Result<(), Status> {
    let seed = uuid::Uuid::new_v4().simple().to_string();
    let target = app
        .create("Target", &format!("t{seed}@example.com"), 30)
        .await;
    let mut client = app.client().await;
    fn request<T>(message: T, header: &Option<(&str, String)>) -> Request<T> {
        let mut request = Request::new(message);
        if let Some((name, value)) = header {
            let name: tonic::metadata::AsciiMetadataKey = name.parse().expect("header name");
            request
                .metadata_mut()
                .insert(name, value.parse().expect("header value"));
        }
        request
    }
    let id = target.person_id;
    match rpc {
        Rpc::List => client
            .list_persons(request(ListPersonsRequest::default(), &header))
            .await
            .map(drop),
        Rpc::Get => client
            .get_person(request(GetPersonRequest { person_id: id }, &header))
            .await
            .map(drop),
        Rpc::Create => client
            .create_person(request(
                CreatePersonRequest {
                    name: "New".into(),
                    email: format!("n{seed}@example.com"),
                    age: 1,
                },
                &header,
            ))
            .await
            .map(drop),
        Rpc::Update => client
            .update_person(request(
                UpdatePersonRequest {
                    person_id: id,
                    name: "Renamed".into(),
                    email: format!("u{seed}@example.com"),
                    age: 2,
                },
                &header,
            ))
            .await
            .map(drop),
        Rpc::Delete => client
            .delete_person(request(DeletePersonRequest { person_id: id }, &header))
            .await
            .map(drop),
    }
}

pub async fn call(app: &TestApp, rpc: Rpc, token: &str) -> Result<(), Status> {
    call_with(app, rpc, Some(("authorization", format!("Bearer {token}")))).await
}

/// Which roles each RPC admits, as the issue states it.
pub fn allowed(rpc: Rpc, role: Role) -> bool {
    match rpc {
        Rpc::List | Rpc::Get => true,
        Rpc::Create | Rpc::Update => matches!(role, Role::Moderator | Role::Admin),
        Rpc::Delete => role == Role::Admin,
    }
}

/// Runs the whole matrix; `token` mints a token carrying exactly one role.
pub async fn assert_role_matrix(app: &TestApp, token: impl Fn(Role) -> String) {
    for role in Role::ALL {
        let token = token(role);
        for rpc in ALL_RPCS {
            let result = call(app, rpc, &token).await;
            if allowed(rpc, role) {
                assert!(result.is_ok(), "{role} on {rpc:?}: {result:?}");
            } else {
                let code = result.map_err(|s| s.code());
                assert_eq!(code, Err(Code::PermissionDenied), "{role} on {rpc:?}");
            }
        }
    }
}

/// Every RPC refuses this token as UNAUTHENTICATED.
pub async fn assert_unauthenticated(app: &TestApp, token: &str, what: &str) {
    for rpc in ALL_RPCS {
        let code = call(app, rpc, token).await.map_err(|s| s.code());
        assert_eq!(code, Err(Code::Unauthenticated), "{what} on {rpc:?}");
    }
}

/// The token with its payload decoded, changed, and re-encoded; the signature is kept.
pub fn tamper(token: &str, change: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut parts = token.split('.');
    let (header, payload, signature) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    change(&mut claims);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    format!("{header}.{payload}.{signature}")
}

/// An unsigned token (`alg: none`) carrying these claims under this key id.
pub fn alg_none(claims: &Claims, kid: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#));
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    format!("{header}.{payload}.")
}

/// Claims as a valid token would carry them, for forging.
pub fn admin_claims(audience: &Audience) -> Claims {
    let now = unix_now();
    Claims {
        iss: audience.issuer.clone(),
        aud: audience.audience.clone(),
        sub: "user-1".into(),
        iat: now,
        nbf: now,
        exp: now + 600,
        jti: uuid::Uuid::new_v4().to_string(),
        roles: vec![Role::Admin],
        username: "mallory".into(),
        sid: None,
        client_id: None,
    }
}

#[tokio::test]
async fn each_rpc_admits_exactly_the_roles_the_policy_names() {
    let app = spawn_app().await;
    assert_role_matrix(&app, |role| hs256_token(&[role])).await;
}

#[tokio::test]
async fn a_call_without_a_token_is_unauthenticated() {
    let app = spawn_app().await;
    for rpc in ALL_RPCS {
        let code = call_with(&app, rpc, None).await.map_err(|s| s.code());
        assert_eq!(code, Err(Code::Unauthenticated), "{rpc:?}");
    }
    for header in ["Basic YWxpY2U6cHc=", "Bearer", "Bearer "] {
        let code = call_with(&app, Rpc::List, Some(("authorization", header.into())))
            .await
            .map_err(|s| s.code());
        assert_eq!(code, Err(Code::Unauthenticated), "{header}");
    }
}

#[tokio::test]
async fn the_tutorials_x_access_token_header_works_too() {
    let app = spawn_app().await;
    let admin = hs256_token(&[Role::Admin]);
    call_with(&app, Rpc::Delete, Some(("x-access-token", admin)))
        .await
        .unwrap();
    let user = hs256_token(&[Role::User]);
    let code = call_with(&app, Rpc::Delete, Some(("x-access-token", user)))
        .await
        .map_err(|s| s.code());
    assert_eq!(code, Err(Code::PermissionDenied));
}

#[tokio::test]
async fn forged_and_stale_hs256_tokens_are_unauthenticated() {
    let app = spawn_app().await;
    let user = hs256_token(&[Role::User]);
    let audience = Audience::default();

    assert_unauthenticated(&app, "garbage", "garbage").await;
    assert_unauthenticated(&app, "a.b.c", "three garbage parts").await;

    let promoted = tamper(&user, |c| c["roles"] = serde_json::json!(["admin"]));
    assert_unauthenticated(&app, &promoted, "roles changed in the payload").await;

    let other_secret = Hs256Secret::new(&[7u8; 32]).unwrap();
    let foreign = Issuer::new(
        SigningKey::Hs256(other_secret),
        audience.clone(),
        std::time::Duration::from_secs(60),
    )
    .unwrap()
    .issue("user-1", "alice", &[Role::Admin])
    .unwrap()
    .token;
    assert_unauthenticated(&app, &foreign, "signed with another secret").await;

    let mut expired = admin_claims(&audience);
    (expired.iat, expired.nbf, expired.exp) =
        (unix_now() - 7200, unix_now() - 7200, unix_now() - 3600);
    let expired = hs256_issuer().sign(&expired).unwrap();
    assert_unauthenticated(&app, &expired, "expired").await;

    let mut early = admin_claims(&audience);
    early.nbf = unix_now() + 3600;
    let early = hs256_issuer().sign(&early).unwrap();
    assert_unauthenticated(&app, &early, "not valid yet").await;

    let mut other_aud = admin_claims(&audience);
    other_aud.aud = "another-api".into();
    let other_aud = hs256_issuer().sign(&other_aud).unwrap();
    assert_unauthenticated(&app, &other_aud, "another audience").await;

    let mut other_iss = admin_claims(&audience);
    other_iss.iss = "evil-issuer".into();
    let other_iss = hs256_issuer().sign(&other_iss).unwrap();
    assert_unauthenticated(&app, &other_iss, "another issuer").await;

    let unsigned = alg_none(&admin_claims(&audience), Hs256Secret::KID);
    assert_unauthenticated(&app, &unsigned, "alg none").await;
}

#[tokio::test]
async fn a_cached_token_never_gains_a_role_it_lacks() {
    let app = spawn_app().await;
    let user = hs256_token(&[Role::User]);
    // The first two calls verify and cache the token; the role check still runs after the hit.
    call(&app, Rpc::List, &user).await.unwrap();
    call(&app, Rpc::Get, &user).await.unwrap();
    for rpc in [Rpc::Create, Rpc::Update, Rpc::Delete] {
        let code = call(&app, rpc, &user).await.map_err(|s| s.code());
        assert_eq!(code, Err(Code::PermissionDenied), "{rpc:?}");
    }
}

#[tokio::test]
async fn a_refused_call_changes_nothing() {
    let app = spawn_app().await;
    let target = app.create("Ann", "ann@example.com", 30).await;
    let user = hs256_token(&[Role::User]);
    let mut client = app.client().await;
    let denied = client
        .delete_person(with_token(
            DeletePersonRequest {
                person_id: target.person_id,
            },
            &user,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let still_there = client
        .get_person(with_token(
            GetPersonRequest {
                person_id: target.person_id,
            },
            &user,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still_there, target);
}
