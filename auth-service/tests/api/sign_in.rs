use std::time::Duration;

use auth_service::Config;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use proto::auth::v1 as pb;
use token::{Audience, Hs256Secret, Issuer, Role, SigningKey, unix_now};
use tonic::Code;

use crate::helpers::{PASSWORD, authed, spawn_app, spawn_with};

#[tokio::test]
async fn a_token_verifies_with_a_standard_jwt_library_given_only_the_jwks() {
    let app = spawn_app().await;
    app.sign_up("alice", "alice@example.com").await.unwrap();
    let signed_in = app.sign_in("alice", PASSWORD).await.unwrap();
    assert_eq!(signed_in.token_type, "Bearer");
    assert_eq!(signed_in.expires_in, 900);
    let user = signed_in.user.unwrap();

    // Serialize the JWKS to RFC 7517 JSON and hand it to jsonwebtoken, nothing of ours.
    let keys: Vec<serde_json::Value> = app
        .jwks()
        .await
        .keys
        .into_iter()
        .map(|k| {
            serde_json::json!({"kty": k.kty, "crv": k.crv, "x": k.x, "kid": k.kid, "alg": k.alg, "use": k.r#use})
        })
        .collect();
    let jwks: JwkSet = serde_json::from_value(serde_json::json!({ "keys": keys })).unwrap();
    let header = jsonwebtoken::decode_header(&signed_in.access_token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("kid is in the JWKS");
    let mut validation = Validation::new(Algorithm::EdDSA);
    // The issuer is the public base URL (RFC 8414), the gateway's under scripts/dev.
    validation.set_issuer(&["http://127.0.0.1:8080"]);
    validation.set_audience(&["persons-api"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        &signed_in.access_token,
        &DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;

    assert_eq!(claims["sub"], user.id.as_str());
    assert_eq!(claims["username"], "alice");
    assert_eq!(claims["roles"], serde_json::json!(["user"]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
    assert_eq!(claims["nbf"], claims["iat"]);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
}

#[tokio::test]
async fn sign_in_accepts_the_email_in_any_case() {
    let app = spawn_app().await;
    app.sign_up("alice", "alice@example.com").await.unwrap();
    let signed_in = app.sign_in("ALICE@example.com", PASSWORD).await.unwrap();
    assert_eq!(signed_in.user.unwrap().username, "alice");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let app = spawn_app().await;
    app.sign_up("alice", "alice@example.com").await.unwrap();
    let wrong = app.sign_in("alice", "wrong password").await.unwrap_err();
    let unknown = app.sign_in("nobody", "wrong password").await.unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(wrong.message(), unknown.message());
    assert!(!wrong.message().contains("alice"));
}

#[tokio::test]
async fn an_empty_login_or_password_is_invalid_argument() {
    let app = spawn_app().await;
    assert_eq!(
        app.sign_in("", PASSWORD).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        app.sign_in("alice", "").await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn get_me_returns_the_callers_profile() {
    let app = spawn_app().await;
    let token = app.user_token("alice").await;
    let me = app
        .client
        .clone()
        .get_me(authed(pb::GetMeRequest {}, &token))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(me.username, "alice");
    assert_eq!(me.email, "alice@example.com");
}

#[tokio::test]
async fn get_me_reads_the_tutorials_x_access_token_header_too() {
    let app = spawn_app().await;
    let token = app.user_token("alice").await;
    let mut request = tonic::Request::new(pb::GetMeRequest {});
    request
        .metadata_mut()
        .insert("x-access-token", token.parse().unwrap());
    let me = app
        .client
        .clone()
        .get_me(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.user.unwrap().username, "alice");
}

#[tokio::test]
async fn get_me_without_a_valid_token_is_unauthenticated() {
    let app = spawn_app().await;
    let error = app
        .client
        .clone()
        .get_me(pb::GetMeRequest {})
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);
    assert_eq!(error.message(), "missing access token");
    for token in ["garbage", "a.b.c"] {
        let error = app
            .client
            .clone()
            .get_me(authed(pb::GetMeRequest {}, token))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated);
    }
}

fn hs256_config(secret: &str) -> Config {
    let mut config = Config::for_tests();
    config.token_alg = token::Algorithm::HS256;
    config.hs256_secret = Some(secret.into());
    config
}

#[tokio::test]
async fn hs256_mode_signs_with_the_shared_secret_and_publishes_no_key() {
    let secret = "an HS256 secret of at least 32 bytes!";
    let app = spawn_with(hs256_config(secret)).await;
    let token = app.user_token("alice").await;
    assert!(app.jwks().await.keys.is_empty());
    let verifier = token::Verifier::hs256(
        &Hs256Secret::new(secret.as_bytes()).unwrap(),
        &Audience::default(),
    );
    let claims = verifier.verify(&token).unwrap();
    assert_eq!(claims.username, "alice");
}

#[tokio::test]
async fn an_expired_token_is_unauthenticated() {
    let secret = "an HS256 secret of at least 32 bytes!";
    let app = spawn_with(hs256_config(secret)).await;
    let token = app.user_token("alice").await;
    let claims = token::Verifier::hs256(
        &Hs256Secret::new(secret.as_bytes()).unwrap(),
        &Audience::default(),
    )
    .verify(&token)
    .unwrap();
    let issuer = Issuer::new(
        SigningKey::Hs256(Hs256Secret::new(secret.as_bytes()).unwrap()),
        Audience::default(),
        Duration::from_secs(60),
    )
    .unwrap();
    let mut expired = claims.clone();
    expired.iat = unix_now() - 3600;
    expired.nbf = expired.iat;
    expired.exp = unix_now() - 60;
    let error = app
        .client
        .clone()
        .get_me(authed(pb::GetMeRequest {}, &issuer.sign(&expired).unwrap()))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated);
    assert!(error.message().contains("expired"), "{}", error.message());

    // The same claims, unexpired, pass: it was the expiry that failed.
    let mut fresh = claims;
    fresh.roles = vec![Role::User];
    assert!(
        app.client
            .clone()
            .get_me(authed(pb::GetMeRequest {}, &issuer.sign(&fresh).unwrap()))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_flood_of_sign_ins_beyond_the_hashing_bound_is_resource_exhausted() {
    let mut config = Config::for_tests();
    config.hash_workers = Some(1);
    config.hash_queue = 0;
    let app = spawn_with(config).await;
    let attempts = (0..32).map(|i| {
        let app = &app;
        async move { app.sign_in(&format!("user{i}"), "some password").await }
    });
    let results = futures::future::join_all(attempts).await;
    let codes: Vec<Code> = results
        .iter()
        .map(|r| r.as_ref().unwrap_err().code())
        .collect();
    assert!(codes.contains(&Code::ResourceExhausted), "{codes:?}");
    assert!(codes.contains(&Code::Unauthenticated), "{codes:?}");
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, Code::ResourceExhausted | Code::Unauthenticated)),
        "{codes:?}"
    );
}

/// On PostgreSQL, which refuses a NUL in text, such a login once made the lookup an internal
/// error; no account can have a control character in its name or email.
#[tokio::test]
async fn a_login_with_a_control_character_is_a_refused_sign_in_on_postgres() {
    let app = spawn_with(crate::helpers::postgres_config().await).await;
    app.sign_up("alice", "alice@example.com").await.unwrap();
    for login in ["alice\u{0}", "ali\u{7}ce", "\u{0}"] {
        let refused = app.sign_in(login, PASSWORD).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::Unauthenticated,
            "{login:?}: {refused}"
        );
    }
}
