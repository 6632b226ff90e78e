//! The attack suite at the token level: every forged or stale token is refused.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use super::*;
use crate::{Ed25519Key, Issuer, Role, unix_now};

fn audience() -> Audience {
    Audience::default()
}

fn issuer(key: &Ed25519Key) -> Issuer {
    Issuer::new(
        SigningKey::Ed25519(key.clone()),
        audience(),
        Duration::from_secs(900),
    )
    .unwrap()
}

fn verifier(key: &Ed25519Key) -> Verifier {
    Verifier::from_jwks([&key.public_jwk()], &audience())
}

fn claims_now() -> Claims {
    let now = unix_now();
    Claims {
        iss: audience().issuer,
        aud: audience().audience,
        sub: "42".into(),
        iat: now,
        nbf: now,
        exp: now + 60,
        jti: "jti-1".into(),
        roles: vec![Role::User],
        username: "alice".into(),
        sid: None,
        client_id: None,
    }
}

fn b64(json: &str) -> String {
    URL_SAFE_NO_PAD.encode(json)
}

#[test]
fn a_token_it_issued_verifies_with_the_public_jwk_alone() {
    let key = Ed25519Key::generate();
    let issued = issuer(&key).issue("42", "alice", &[Role::User]).unwrap();
    let claims = verifier(&key).verify(&issued.token).unwrap();
    assert_eq!(claims, issued.claims);
    assert_eq!(claims.exp - claims.iat, 900);
}

#[test]
fn a_service_accounts_token_names_its_client_and_has_its_own_lifetime() {
    let key = Ed25519Key::generate();
    let issued = issuer(&key)
        .issue_for_client(
            "c-1",
            "billing",
            &[Role::Moderator],
            Duration::from_secs(300),
        )
        .unwrap();
    let claims = verifier(&key).verify(&issued.token).unwrap();
    assert_eq!(claims, issued.claims);
    assert_eq!(claims.sub, "sa:c-1");
    assert_eq!(claims.client_id.as_deref(), Some("c-1"));
    assert_eq!(claims.username, "billing");
    assert_eq!(claims.roles, [Role::Moderator]);
    assert_eq!(claims.sid, None);
    assert_eq!(claims.exp - claims.iat, 300);
    assert!(claims.is_service_account());
    assert!(
        !verifier(&key)
            .verify(&issuer(&key).issue("42", "a", &[]).unwrap().token)
            .unwrap()
            .is_service_account()
    );
}

#[test]
fn hs256_tokens_verify_with_the_shared_secret() {
    let secret = Hs256Secret::new(&[9u8; 32]).unwrap();
    let issuer = Issuer::new(
        SigningKey::Hs256(secret.clone()),
        audience(),
        Duration::from_secs(60),
    )
    .unwrap();
    let token = issuer.issue("1", "bob", &[Role::Admin]).unwrap().token;
    let claims = Verifier::hs256(&secret, &audience())
        .verify(&token)
        .unwrap();
    assert!(claims.has_role(Role::Admin));
    let other = Hs256Secret::new(&[8u8; 32]).unwrap();
    assert_eq!(
        Verifier::hs256(&other, &audience()).verify(&token),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn a_token_signed_by_another_key_with_the_same_kid_is_refused() {
    let key = Ed25519Key::generate();
    let mut jwk = Ed25519Key::generate().public_jwk();
    jwk.kid = key.kid().to_owned();
    let token = issuer(&key).issue("42", "alice", &[]).unwrap().token;
    let verifier = Verifier::from_jwks([&jwk], &audience());
    assert_eq!(verifier.verify(&token), Err(VerifyError::BadSignature));
}

#[test]
fn an_unknown_key_id_is_reported_so_the_caller_can_refetch() {
    let token = issuer(&Ed25519Key::generate())
        .issue("42", "a", &[])
        .unwrap()
        .token;
    let result = verifier(&Ed25519Key::generate()).verify(&token);
    assert!(matches!(result, Err(VerifyError::UnknownKey(_))));
}

#[test]
fn an_unknown_key_id_is_not_repeated_in_the_message() {
    let error = VerifyError::UnknownKey("<script>x</script>".to_owned());
    assert!(!error.to_string().contains("script"), "{error}");
}

#[test]
fn a_tampered_payload_is_refused() {
    let key = Ed25519Key::generate();
    let token = issuer(&key)
        .issue("42", "alice", &[Role::User])
        .unwrap()
        .token;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = claims_now();
    claims.roles = vec![Role::Admin];
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(&serde_json::to_string(&claims).unwrap()),
        parts[2]
    );
    assert_eq!(
        verifier(&key).verify(&forged),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn alg_none_is_refused() {
    let key = Ed25519Key::generate();
    let header = b64(&format!(
        r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
        key.kid()
    ));
    let body = b64(&serde_json::to_string(&claims_now()).unwrap());
    for token in [format!("{header}.{body}."), format!("{header}.{body}")] {
        assert_eq!(verifier(&key).verify(&token), Err(VerifyError::Malformed));
    }
}

#[test]
fn hs256_signed_with_the_public_key_as_secret_is_refused() {
    let key = Ed25519Key::generate();
    // The classic confusion attack: use the published key bytes as an HMAC secret.
    let public = key.public_jwk().x;
    let forger = Issuer::new(
        SigningKey::Hs256(Hs256Secret::new(public.as_bytes()).unwrap()),
        audience(),
        Duration::from_secs(60),
    )
    .unwrap();
    let mut claims = claims_now();
    claims.roles = vec![Role::Admin];
    let token = forger.sign(&claims).unwrap();
    // Swap in the real kid so only the algorithm can give it away.
    let (_, rest) = token.split_once('.').unwrap();
    let header = b64(&format!(
        r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#,
        key.kid()
    ));
    let forged = format!("{header}.{rest}");
    assert_eq!(
        verifier(&key).verify(&forged),
        Err(VerifyError::AlgorithmNotAllowed)
    );
}

#[test]
fn expired_and_not_yet_valid_tokens_are_refused() {
    let key = Ed25519Key::generate();
    let issuer = issuer(&key);
    let mut expired = claims_now();
    expired.exp = unix_now() - 60;
    assert_eq!(
        verifier(&key).verify(&issuer.sign(&expired).unwrap()),
        Err(VerifyError::Expired)
    );
    let mut early = claims_now();
    early.nbf = unix_now() + 60;
    assert_eq!(
        verifier(&key).verify(&issuer.sign(&early).unwrap()),
        Err(VerifyError::NotYetValid)
    );
}

#[test]
fn small_clock_skew_is_tolerated() {
    let key = Ed25519Key::generate();
    let mut claims = claims_now();
    claims.nbf = unix_now() + 2;
    let token = issuer(&key).sign(&claims).unwrap();
    assert!(verifier(&key).verify(&token).is_ok());
}

#[test]
fn another_issuer_or_audience_is_refused() {
    let key = Ed25519Key::generate();
    let issuer = issuer(&key);
    let mut foreign = claims_now();
    foreign.iss = "someone-else".into();
    assert_eq!(
        verifier(&key).verify(&issuer.sign(&foreign).unwrap()),
        Err(VerifyError::WrongIssuer)
    );
    let mut elsewhere = claims_now();
    elsewhere.aud = "billing-api".into();
    assert_eq!(
        verifier(&key).verify(&issuer.sign(&elsewhere).unwrap()),
        Err(VerifyError::WrongAudience)
    );
}

#[test]
fn a_token_without_kid_is_refused() {
    let key = Ed25519Key::generate();
    let token = issuer(&key).issue("1", "a", &[]).unwrap().token;
    let (_, rest) = token.split_once('.').unwrap();
    let forged = format!("{}.{rest}", b64(r#"{"alg":"EdDSA","typ":"JWT"}"#));
    assert_eq!(
        verifier(&key).verify(&forged),
        Err(VerifyError::MissingKeyId)
    );
}

#[test]
fn garbage_is_malformed() {
    let v = verifier(&Ed25519Key::generate());
    for token in ["", "abc", "a.b.c", "....", "Bearer x.y.z"] {
        assert_eq!(v.verify(token), Err(VerifyError::Malformed), "{token:?}");
    }
}

/// A role a newer auth-service issues and this version does not know grants nothing here, and
/// the token's known roles still count (a rolling upgrade mixes versions).
#[test]
fn unknown_roles_in_a_signed_token_grant_nothing() {
    let key = Ed25519Key::generate();
    let header = b64(&format!(
        r#"{{"alg":"EdDSA","typ":"JWT","kid":"{}"}}"#,
        key.kid()
    ));
    let mut claims = serde_json::to_value(claims_now()).unwrap();
    claims["roles"] = serde_json::json!(["root", "user"]);
    let body = b64(&claims.to_string());
    let signature = key.raw_sign(format!("{header}.{body}").as_bytes());
    let token = format!("{header}.{body}.{}", URL_SAFE_NO_PAD.encode(signature));
    let verified = verifier(&key).verify(&token).unwrap();
    assert_eq!(verified.roles, [Role::User]);
    assert!(!verified.has_role(Role::Admin));
}
