//! The set-up both the criterion bench (`benches/token.rs`) and the crypto-floor example
//! (`examples/floor.rs`) measure: one EdDSA key with its issuer and verifier, a token, and the
//! bare Ed25519 primitive from the same key over the same signing input, the floor our token
//! code is measured against.

use std::time::Duration;

use ed25519_dalek::Signer;
use secrecy::ExposeSecret;
use token::{Audience, Ed25519Key, Issuer, Role, SigningKey, Verifier};

pub struct EdDsa {
    pub issuer: Issuer,
    pub verifier: Verifier,
    pub token: String,
    /// The token's `header.payload`, what its signature covers.
    pub signing_input: String,
    pub raw: ed25519_dalek::SigningKey,
    pub public: ed25519_dalek::VerifyingKey,
    pub signature: ed25519_dalek::Signature,
}

impl EdDsa {
    pub fn new() -> Self {
        let key = Ed25519Key::generate();
        let issuer = Issuer::new(
            SigningKey::Ed25519(key.clone()),
            Audience::default(),
            Duration::from_secs(900),
        )
        .expect("issuer");
        let verifier = Verifier::from_jwks([&key.public_jwk()], &Audience::default());
        let token = issuer
            .issue(
                "0190c2a4-7e1c-7000-8000-000000000001",
                "alice",
                &[Role::User],
            )
            .expect("issue")
            .token;
        let signing_input = token.rsplit_once('.').expect("three parts").0.to_owned();
        let seed: [u8; 32] = key.seed().expose_secret().try_into().expect("32-byte seed");
        let raw = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public = raw.verifying_key();
        let signature = raw.sign(signing_input.as_bytes());
        Self {
            issuer,
            verifier,
            token,
            signing_input,
            raw,
            public,
            signature,
        }
    }
}
