//! The interceptor and the layer give the same answer (gRPC code and message) to every token,
//! forged or real, for every role: both run one check. The one difference, a token naming a
//! key the service has not fetched yet, has tests of its own. Real gRPC servers on port 0, keys
//! from a real JWKS endpoint (a stand-in auth-service publishing keys the test holds).

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use crate::support::{ALL_RPCS, Answer, EDITORS, KeyServer, Rpc, call, issuer, keys_from};
use authn::{Access, Gate, RevocationConfig, Revocations, TokenCache};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use proto::auth::v1::{Revocation, RevocationBatch, revocation::Subject};
use token::{Audience, Claims, Ed25519Key, Role, unix_now};
use tonic::Code;

/// The same keys published to a layer-guarded server and to three interceptor-guarded ones
/// (one per rule of the person service), each with its own key set fetched from the stand-in,
/// sharing one revocation view.
struct Servers {
    keys: KeyServer,
    key: Ed25519Key,
    layer: SocketAddr,
    interceptors: HashMap<&'static str, SocketAddr>,
}

fn rule_name(access: Access) -> &'static str {
    match access {
        Access::SignedIn => "signed-in",
        Access::AnyRole(EDITORS) => "editors",
        _ => "admins",
    }
}

const REVOKED_SESSION: &str = "ended-session";

async fn servers() -> Servers {
    let keys = KeyServer::default();
    let key = Ed25519Key::generate();
    keys.publish(key.public_jwk());
    let url = keys.serve().await;

    let revocations = Revocations::manual(RevocationConfig::new(Vec::new()));
    let now = unix_now();
    revocations.apply(
        &RevocationBatch {
            revocations: vec![Revocation {
                seq: 1,
                subject: Some(Subject::SessionId(REVOKED_SESSION.into())),
                not_before: now,
                expires_at: now + 3600,
            }],
            cursor: 1,
            ..RevocationBatch::default()
        },
        true,
    );

    let layer_gate = Gate::new(keys_from(&url).await, TokenCache::default())
        .with_revocations(revocations.clone());
    let gate =
        Gate::new(keys_from(&url).await, TokenCache::default()).with_revocations(revocations);
    let layer = crate::support::serve_layer(&layer_gate).await;
    let mut interceptors = HashMap::new();
    for access in [
        Access::SignedIn,
        Access::AnyRole(EDITORS),
        Access::AnyRole(&[Role::Admin]),
    ] {
        interceptors.insert(
            rule_name(access),
            crate::support::serve_interceptor(&gate, access).await,
        );
    }
    Servers {
        keys,
        key,
        layer,
        interceptors,
    }
}

impl Servers {
    fn interceptor(&self, rpc: Rpc) -> SocketAddr {
        self.interceptors[rule_name(rpc.access())]
    }

    /// Every RPC through both, with `header`; asserts the answers are the same and returns
    /// them.
    async fn same_answers(&self, header: Option<(&str, &str)>, what: &str) -> Vec<(Rpc, Answer)> {
        let mut answers = Vec::new();
        for rpc in ALL_RPCS {
            let by_layer = call(self.layer, rpc, header).await;
            let by_interceptor = call(self.interceptor(rpc), rpc, header).await;
            assert_eq!(
                by_layer, by_interceptor,
                "{what} on {rpc:?}: layer vs interceptor"
            );
            answers.push((rpc, by_layer));
        }
        answers
    }

    /// Both refuse `token` on every RPC with the same UNAUTHENTICATED answer.
    async fn both_unauthenticated(&self, token: &str, what: &str) {
        let header = format!("Bearer {token}");
        for (rpc, answer) in self
            .same_answers(Some(("authorization", &header)), what)
            .await
        {
            assert_eq!(
                answer.map_err(|e| e.0),
                Err(Code::Unauthenticated),
                "{what} on {rpc:?}"
            );
        }
    }

    fn sign(&self, change: impl FnOnce(&mut Claims)) -> String {
        let mut claims = admin_claims();
        change(&mut claims);
        issuer(&self.key).sign(&claims).unwrap()
    }
}

fn admin_claims() -> Claims {
    let audience = Audience::default();
    let now = unix_now();
    Claims {
        iss: audience.issuer,
        aud: audience.audience,
        sub: "user-1".into(),
        iat: now,
        nbf: now,
        exp: now + 600,
        jti: format!("jti-{now}"),
        roles: vec![Role::Admin],
        username: "mallory".into(),
        sid: None,
        client_id: None,
    }
}

fn allowed(rpc: Rpc, role: Role) -> bool {
    match rpc {
        Rpc::List | Rpc::Get => true,
        Rpc::Create | Rpc::Update => matches!(role, Role::Moderator | Role::Admin),
        Rpc::Delete => role == Role::Admin,
    }
}

/// The token with its payload decoded, changed, and re-encoded; the signature is kept.
fn tamper(token: &str, change: impl FnOnce(&mut serde_json::Value)) -> String {
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

fn alg_none(claims: &Claims, kid: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#));
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    format!("{header}.{payload}.")
}

fn hs256_with_secret(secret: &[u8], kid: &str, claims: &Claims) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[tokio::test]
async fn every_role_gets_the_same_answers_from_the_layer_and_the_interceptor() {
    let s = servers().await;
    let issuer = issuer(&s.key);
    for role in Role::ALL {
        let token = issuer
            .issue("u", &format!("{role}-caller"), &[role])
            .unwrap()
            .token;
        for header in [
            ("authorization", format!("Bearer {token}")),
            ("x-access-token", token.clone()),
        ] {
            for (rpc, answer) in s
                .same_answers(Some((header.0, &header.1)), &format!("{role}"))
                .await
            {
                if allowed(rpc, role) {
                    // The handler saw the verified claims.
                    assert_eq!(
                        answer,
                        Ok(if rpc == Rpc::Delete {
                            "deleted".into()
                        } else {
                            format!("{role}-caller")
                        }),
                        "{role} on {rpc:?}"
                    );
                } else {
                    let (code, message) = answer.unwrap_err();
                    assert_eq!(code, Code::PermissionDenied, "{role} on {rpc:?}");
                    assert!(message.starts_with("this requires the role"), "{message}");
                }
            }
        }
    }
}

#[tokio::test]
async fn missing_and_malformed_headers_get_the_same_answers() {
    let s = servers().await;
    for (header, what) in [
        (None, "no token"),
        (
            Some(("authorization", "Basic YWxpY2U6cHc=")),
            "basic scheme",
        ),
        (
            Some(("authorization", "Bearer")),
            "no token after the scheme",
        ),
        (Some(("x-access-token", " ")), "empty x-access-token"),
    ] {
        for (rpc, answer) in s.same_answers(header, what).await {
            assert_eq!(
                answer.map_err(|e| e.0),
                Err(Code::Unauthenticated),
                "{what} on {rpc:?}"
            );
        }
    }
}

#[tokio::test]
async fn forged_stale_and_revoked_tokens_get_the_same_answers() {
    let s = servers().await;
    let user = issuer(&s.key)
        .issue("u", "alice", &[Role::User])
        .unwrap()
        .token;

    s.both_unauthenticated("garbage", "garbage").await;
    s.both_unauthenticated("a.b.c", "three garbage parts").await;
    let promoted = tamper(&user, |c| c["roles"] = serde_json::json!(["admin"]));
    s.both_unauthenticated(&promoted, "roles changed in the payload")
        .await;

    let other = issuer(&Ed25519Key::generate())
        .issue("u", "alice", &[Role::User])
        .unwrap()
        .token;
    let (head, _) = user.rsplit_once('.').unwrap();
    let (_, foreign_sig) = other.rsplit_once('.').unwrap();
    s.both_unauthenticated(&format!("{head}.{foreign_sig}"), "wrong signature")
        .await;

    let expired = s.sign(|c| {
        (c.iat, c.nbf, c.exp) = (unix_now() - 7200, unix_now() - 7200, unix_now() - 3600)
    });
    s.both_unauthenticated(&expired, "expired").await;
    s.both_unauthenticated(&s.sign(|c| c.nbf = unix_now() + 3600), "not valid yet")
        .await;
    s.both_unauthenticated(
        &s.sign(|c| c.aud = "another-api".into()),
        "another audience",
    )
    .await;
    s.both_unauthenticated(&s.sign(|c| c.iss = "evil-issuer".into()), "another issuer")
        .await;
    s.both_unauthenticated(&alg_none(&admin_claims(), s.key.kid()), "alg none")
        .await;

    let jwk = s.key.public_jwk();
    for secret in [
        URL_SAFE_NO_PAD.decode(&jwk.x).unwrap(),
        jwk.x.as_bytes().to_vec(),
        serde_json::to_vec(&jwk).unwrap(),
    ] {
        let confused = hs256_with_secret(&secret, s.key.kid(), &admin_claims());
        s.both_unauthenticated(&confused, "HS256 signed with the public key")
            .await;
    }

    let revoked = s.sign(|c| c.sid = Some(REVOKED_SESSION.into()));
    s.both_unauthenticated(&revoked, "an ended session").await;
    let header = format!("Bearer {revoked}");
    let answers = s
        .same_answers(Some(("authorization", &header)), "an ended session")
        .await;
    assert_eq!(
        answers[0].1,
        Err((Code::Unauthenticated, "token revoked".into()))
    );
}

#[tokio::test]
async fn a_token_from_an_unknown_key_is_refused_by_both_but_only_the_layer_waits_for_the_refetch() {
    let s = servers().await;
    let stranger = issuer(&Ed25519Key::generate())
        .issue("u", "alice", &[Role::User])
        .unwrap()
        .token;
    let header = format!("Bearer {stranger}");
    let header = Some(("authorization", header.as_str()));
    let (code, message) = call(s.layer, Rpc::List, header).await.unwrap_err();
    assert_eq!(code, Code::Unauthenticated);
    assert_eq!(
        message,
        "invalid access token: token is signed with an unknown key"
    );
    let (code, message) = call(s.interceptor(Rpc::List), Rpc::List, header)
        .await
        .unwrap_err();
    assert_eq!(code, Code::Unauthenticated);
    assert!(message.contains("unknown signing key"), "{message}");
}

#[tokio::test]
async fn a_new_key_is_fetched_in_the_background_and_works_on_a_retry() {
    let s = servers().await;
    let fetches_at_start = s.keys.fetches();
    let next = Ed25519Key::generate();
    s.keys.publish(next.public_jwk());
    let token = issuer(&next)
        .issue("u", "newcomer", &[Role::Admin])
        .unwrap()
        .token;
    let header = format!("Bearer {token}");
    let header = Some(("authorization", header.as_str()));
    let admins = s.interceptors["admins"];

    let (code, message) = call(admins, Rpc::Delete, header).await.unwrap_err();
    assert_eq!(code, Code::Unauthenticated);
    assert!(message.contains("unknown signing key"), "{message}");
    // A generous bound: the refetch is one local call.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match call(admins, Rpc::Delete, header).await {
            Ok(_) => break,
            Err(refused) => assert!(
                tokio::time::Instant::now() < deadline,
                "still refused: {refused:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The interceptor's key set fetched once for the new key (the layer's never saw it).
    assert_eq!(s.keys.fetches(), fetches_at_start + 1);
    // The claims came through.
    assert_eq!(
        call(s.interceptors["signed-in"], Rpc::Get, header).await,
        Ok("newcomer".into())
    );
}

#[tokio::test]
async fn a_flood_of_unknown_key_ids_starts_at_most_one_background_refetch() {
    let s = servers().await;
    let fetches_at_start = s.keys.fetches();
    let addr = s.interceptors["signed-in"];
    let calls = (0..30).map(|i| async move {
        let token = issuer(&Ed25519Key::generate())
            .issue("u", &format!("s{i}"), &[Role::User])
            .unwrap()
            .token;
        let header = format!("Bearer {token}");
        call(addr, Rpc::List, Some(("authorization", &header)))
            .await
            .map_err(|e| e.0)
    });
    for result in futures::future::join_all(calls).await {
        assert_eq!(result, Err(Code::Unauthenticated));
    }
    // Let any refetch started by the flood finish before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        s.keys.fetches() <= fetches_at_start + 1,
        "{} fetches",
        s.keys.fetches() - fetches_at_start
    );
}

#[tokio::test]
async fn with_no_keys_yet_both_answer_unavailable() {
    // Nothing listens on port 1: the key sets stay empty.
    let keys = || keys_from("http://127.0.0.1:1");
    let layer = crate::support::serve_layer(&Gate::new(keys().await, TokenCache::default())).await;
    let gate = Gate::new(keys().await, TokenCache::default());
    let interceptor = crate::support::serve_interceptor(&gate, Access::SignedIn).await;
    let token = issuer(&Ed25519Key::generate())
        .issue("u", "alice", &[Role::User])
        .unwrap()
        .token;
    let header = format!("Bearer {token}");
    let header = Some(("authorization", header.as_str()));
    let by_layer = call(layer, Rpc::List, header).await;
    assert_eq!(by_layer, call(interceptor, Rpc::List, header).await);
    assert_eq!(by_layer.unwrap_err().0, Code::Unavailable);
}
