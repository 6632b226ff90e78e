//! The hand-written JWS code against jsonwebtoken: the same bytes out, and the same answer for
//! every token in, valid or forged, as the jsonwebtoken-based verifier this crate used before.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{DecodingKey, EncodingKey, Validation, errors::ErrorKind};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::*;
use crate::{Ed25519Key, Issuer, Role};

fn claims_now() -> Claims {
    let now = unix_now();
    Claims {
        iss: Audience::default().issuer,
        aud: Audience::default().audience,
        sub: "42".into(),
        iat: now,
        nbf: now,
        exp: now + 60,
        jti: "jti-1".into(),
        roles: vec![Role::User, Role::Admin],
        username: "alice \"a\" ü".into(),
        sid: Some("s-1".into()),
        client_id: None,
    }
}

/// The Ed25519 key in the forms jsonwebtoken takes.
fn jwt_keys(key: &Ed25519Key) -> (EncodingKey, DecodingKey) {
    let seed: [u8; 32] = key.seed().expose_secret().try_into().unwrap();
    let dalek = ed25519_dalek::SigningKey::from_bytes(&seed);
    let der = dalek.to_pkcs8_der().unwrap();
    (
        EncodingKey::from_ed_der(der.as_bytes()),
        DecodingKey::from_ed_der(dalek.verifying_key().as_bytes()),
    )
}

fn jwt_header(alg: jsonwebtoken::Algorithm, kid: &str) -> jsonwebtoken::Header {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(kid.to_owned());
    header
}

/// The verifier as it was, on jsonwebtoken's `decode`, kept as the reference.
fn reference_verify(
    algorithm: Algorithm,
    keys: &HashMap<&str, DecodingKey>,
    token: &str,
    check_expiry: bool,
) -> Result<Claims, VerifyError> {
    let audience = Audience::default();
    let mut validation = Validation::new(algorithm.jwt());
    validation.algorithms = vec![algorithm.jwt()];
    validation.leeway = LEEWAY_SECS;
    validation.validate_exp = check_expiry;
    validation.validate_nbf = true;
    validation.set_issuer(&[&audience.issuer]);
    validation.set_audience(&[&audience.audience]);
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
    let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
    if header.alg != algorithm.jwt() {
        return Err(VerifyError::AlgorithmNotAllowed);
    }
    let kid = header.kid.ok_or(VerifyError::MissingKeyId)?;
    let key = keys
        .get(kid.as_str())
        .ok_or_else(|| VerifyError::UnknownKey(kid.clone()))?;
    jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => VerifyError::BadSignature,
            ErrorKind::ExpiredSignature => VerifyError::Expired,
            ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
            ErrorKind::InvalidIssuer => VerifyError::WrongIssuer,
            ErrorKind::InvalidAudience => VerifyError::WrongAudience,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                VerifyError::AlgorithmNotAllowed
            }
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                VerifyError::Malformed
            }
            _ => VerifyError::InvalidClaims,
        })
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with this header and payload JSON, signed by `key` as a careless issuer would.
fn signed(key: &Ed25519Key, header: &Value, payload: &Value) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(payload.to_string()));
    format!("{input}.{}", b64(key.raw_sign(input.as_bytes())))
}

/// Every character of `token` replaced, one at a time, by a neighbour: tampering everywhere.
fn with_each_character_changed(token: &str) -> impl Iterator<Item = String> + '_ {
    (0..token.len()).map(move |i| {
        let mut bytes = token.as_bytes().to_vec();
        bytes[i] = match bytes[i] {
            b'.' => b'A',
            b'z' => b'a',
            b'9' => b'0',
            b'_' => b'-',
            other => other + 1,
        };
        String::from_utf8(bytes).unwrap()
    })
}

#[test]
fn eddsa_tokens_are_byte_for_byte_the_ones_jsonwebtoken_writes() {
    let key = Ed25519Key::generate();
    let issuer = Issuer::new(
        SigningKey::Ed25519(key.clone()),
        Audience::default(),
        Duration::from_secs(60),
    )
    .unwrap();
    let claims = claims_now();
    let (encoding, _) = jwt_keys(&key);
    let expected = jsonwebtoken::encode(
        &jwt_header(jsonwebtoken::Algorithm::EdDSA, key.kid()),
        &claims,
        &encoding,
    )
    .unwrap();
    assert_eq!(issuer.sign(&claims).unwrap(), expected);
}

#[test]
fn hs256_tokens_are_byte_for_byte_the_ones_jsonwebtoken_writes() {
    let secret = Hs256Secret::new(&[5u8; 32]).unwrap();
    let issuer = Issuer::new(
        SigningKey::Hs256(secret.clone()),
        Audience::default(),
        Duration::from_secs(60),
    )
    .unwrap();
    let claims = claims_now();
    let expected = jsonwebtoken::encode(
        &jwt_header(jsonwebtoken::Algorithm::HS256, Hs256Secret::KID),
        &claims,
        &EncodingKey::from_secret(&[5u8; 32]),
    )
    .unwrap();
    assert_eq!(issuer.sign(&claims).unwrap(), expected);
}

#[test]
fn jsonwebtoken_accepts_what_the_issuer_signs_and_the_verifier_accepts_what_jsonwebtoken_signs() {
    let key = Ed25519Key::generate();
    let (encoding, decoding) = jwt_keys(&key);
    let keys = HashMap::from([(key.kid(), decoding)]);
    let issued = Issuer::new(
        SigningKey::Ed25519(key.clone()),
        Audience::default(),
        Duration::from_secs(60),
    )
    .unwrap()
    .issue("7", "bob", &[Role::Moderator])
    .unwrap();
    assert_eq!(
        reference_verify(Algorithm::EdDSA, &keys, &issued.token, true),
        Ok(issued.claims)
    );

    // A header of jsonwebtoken's choosing, members in another order and all.
    let claims = claims_now();
    let mut header = jwt_header(jsonwebtoken::Algorithm::EdDSA, key.kid());
    header.cty = Some("JWT".into());
    let token = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
    let verifier = Verifier::from_jwks([&key.public_jwk()], &Audience::default());
    assert_eq!(verifier.verify(&token), Ok(claims));
}

/// The jsonwebtoken-based verifier and this one agree on every token in a large set of forged,
/// broken and valid ones, error variant and all.
#[test]
fn every_token_gets_the_answer_jsonwebtoken_gave() {
    let key = Ed25519Key::generate();
    let stranger = Ed25519Key::generate();
    let (_, decoding) = jwt_keys(&key);
    let reference_keys = HashMap::from([(key.kid(), decoding)]);
    let verifier = Verifier::from_jwks([&key.public_jwk()], &Audience::default());
    let issuer = Issuer::new(
        SigningKey::Ed25519(key.clone()),
        Audience::default(),
        Duration::from_secs(60),
    )
    .unwrap();

    let valid = issuer.sign(&claims_now()).unwrap();
    let header = json!({"typ": "JWT", "alg": "EdDSA", "kid": key.kid()});
    let claims = serde_json::to_value(claims_now()).unwrap();
    let now = unix_now();
    let with = |member: &str, value: Value| {
        let mut claims = claims.clone();
        claims[member] = value;
        claims
    };
    let without = |member: &str| {
        let mut claims = claims.clone();
        claims.as_object_mut().unwrap().remove(member);
        claims
    };
    let header_with = |member: &str, value: Value| {
        let mut header = header.clone();
        header[member] = value;
        header
    };
    let (valid_input, valid_signature) = valid.rsplit_once('.').unwrap();
    let (valid_header, valid_payload) = valid_input.split_once('.').unwrap();

    let mut tokens: Vec<String> = vec![
        valid.clone(),
        String::new(),
        ".".into(),
        "..".into(),
        "...".into(),
        "a.b.c".into(),
        "Bearer x.y.z".into(),
        format!("{valid}.{valid_signature}"),
        format!("{valid_input}."),
        valid_input.to_owned(),
        format!("{valid_header}.{valid_payload}.{valid_signature}="),
        format!("{valid_input}.{}", &valid_signature[..40]),
        format!("{valid_input}.{valid_signature}AAAA"),
        format!("{valid_input}.{}", b64([0u8; 64])),
        format!("{valid_input}.{}", b64([0xffu8; 64])),
        format!("{valid_header}.{}.{valid_signature}", b64("not json")),
        format!("{valid_header}.!!!.{valid_signature}"),
        signed(&key, &header, &claims),
        signed(&stranger, &header, &claims),
        signed(&key, &header_with("alg", json!("none")), &claims),
        signed(&key, &header_with("alg", json!("HS256")), &claims),
        signed(&key, &header_with("alg", json!("RS256")), &claims),
        signed(&key, &header_with("alg", json!("eddsa")), &claims),
        signed(&key, &header_with("alg", json!(null)), &claims),
        signed(&key, &header_with("kid", json!(null)), &claims),
        signed(&key, &header_with("kid", json!(7)), &claims),
        signed(&key, &header_with("kid", json!("someone-else")), &claims),
        signed(&key, &header_with("typ", json!("at+jwt")), &claims),
        signed(&key, &json!({"alg": "EdDSA"}), &claims),
        signed(&key, &json!([1, 2]), &claims),
        signed(&key, &header, &json!([1, 2])),
        signed(&key, &header, &json!("claims")),
        signed(&key, &header, &with("exp", json!(now - 60))),
        signed(&key, &header, &with("exp", json!(now - 2))),
        signed(&key, &header, &with("exp", json!(-1))),
        signed(&key, &header, &with("exp", json!((now + 60) as f64))),
        signed(&key, &header, &with("exp", json!(u64::MAX))),
        signed(&key, &header, &with("exp", json!("soon"))),
        signed(&key, &header, &with("nbf", json!(now + 60))),
        signed(&key, &header, &with("nbf", json!(now + 2))),
        signed(&key, &header, &with("nbf", json!(-1))),
        signed(&key, &header, &with("iat", json!(-1))),
        signed(&key, &header, &with("iss", json!("someone-else"))),
        signed(&key, &header, &with("iss", json!(["auth-service"]))),
        signed(&key, &header, &with("aud", json!("billing-api"))),
        signed(&key, &header, &with("aud", json!(["persons-api"]))),
        signed(&key, &header, &with("aud", json!(null))),
        signed(&key, &header, &with("sub", json!(42))),
        signed(&key, &header, &with("roles", json!(["root", "admin"]))),
        signed(&key, &header, &with("roles", json!("admin"))),
        signed(&key, &header, &with("extra", json!({"any": "thing"}))),
        signed(&key, &header, &with("sid", json!(null))),
        signed(
            &key,
            &header,
            &with("iss", json!("someone-else"))
                .as_object()
                .map(|c| {
                    let mut c = c.clone();
                    c.insert("exp".into(), json!(now - 60));
                    Value::Object(c)
                })
                .unwrap(),
        ),
    ];
    for member in [
        "exp", "nbf", "iat", "iss", "aud", "sub", "jti", "roles", "username", "sid",
    ] {
        tokens.push(signed(&key, &header, &without(member)));
    }
    tokens.extend(with_each_character_changed(&valid));

    for token in &tokens {
        for check_expiry in [true, false] {
            assert_eq!(
                verifier.verify_with(token, check_expiry),
                reference_verify(Algorithm::EdDSA, &reference_keys, token, check_expiry),
                "{token:?}, checking expiry: {check_expiry}"
            );
        }
    }
}

#[test]
fn hs256_tokens_get_the_answer_jsonwebtoken_gave() {
    let secret = Hs256Secret::new(&[3u8; 32]).unwrap();
    let reference_keys = HashMap::from([(Hs256Secret::KID, DecodingKey::from_secret(&[3u8; 32]))]);
    let verifier = Verifier::hs256(&secret, &Audience::default());
    let issuer = Issuer::new(
        SigningKey::Hs256(secret),
        Audience::default(),
        Duration::from_secs(60),
    )
    .unwrap();
    let mut expired = claims_now();
    expired.exp = unix_now() - 60;
    let valid = issuer.sign(&claims_now()).unwrap();
    let (input, _) = valid.rsplit_once('.').unwrap();
    let mut tokens = vec![
        valid.clone(),
        issuer.sign(&expired).unwrap(),
        format!("{input}."),
        format!("{input}.!!"),
        format!("{input}.{}", b64([0u8; 32])),
        format!("{input}.{}", b64([0u8; 16])),
    ];
    tokens.extend(with_each_character_changed(&valid));
    for token in &tokens {
        assert_eq!(
            verifier.verify(token),
            reference_verify(Algorithm::HS256, &reference_keys, token, true),
            "{token:?}"
        );
    }
}

#[test]
fn a_token_that_needs_a_header_extension_is_refused() {
    let key = Ed25519Key::generate();
    let header = json!({"alg": "EdDSA", "kid": key.kid(), "crit": ["b64"], "b64": false});
    let token = signed(&key, &header, &serde_json::to_value(claims_now()).unwrap());
    let verifier = Verifier::from_jwks([&key.public_jwk()], &Audience::default());
    assert_eq!(verifier.verify(&token), Err(VerifyError::Malformed));
}

#[test]
fn a_key_of_the_other_algorithm_in_the_set_is_never_used() {
    let ed = Ed25519Key::generate();
    let secret = Hs256Secret::new(&[4u8; 32]).unwrap();
    // The HS256 key comes last, so HS256 is pinned; the Ed25519 key must not check HS256 tokens.
    let verifier = Verifier::for_keys(
        [&SigningKey::Ed25519(ed.clone()), &SigningKey::Hs256(secret)],
        &Audience::default(),
    );
    let header = json!({"alg": "HS256", "kid": ed.kid()});
    let token = signed(&ed, &header, &serde_json::to_value(claims_now()).unwrap());
    assert_eq!(
        verifier.verify(&token),
        Err(VerifyError::AlgorithmNotAllowed)
    );
}

#[test]
fn a_jwk_whose_x_is_not_a_curve_point_is_left_out() {
    // y = 2 has no x on the curve, so these 32 bytes decompress to no point.
    let mut not_a_point = [0u8; 32];
    not_a_point[0] = 2;
    let mut jwk = Ed25519Key::generate().public_jwk();
    jwk.x = b64(not_a_point);
    assert!(ed25519_dalek::VerifyingKey::from_bytes(&not_a_point).is_err());
    let verifier = Verifier::from_jwks([&jwk], &Audience::default());
    assert_eq!(verifier.key_count(), 0);
}
