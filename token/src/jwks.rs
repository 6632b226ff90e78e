//! The public half of the signing keys as an RFC 7517 JSON Web Key Set.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

/// One public key. Only Ed25519 (RFC 8037 `OKP`) keys are ever published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub crv: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub x: String,
    pub kid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub alg: String,
    #[serde(rename = "use", default, skip_serializing_if = "String::is_empty")]
    pub use_: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

impl Jwk {
    pub fn ed25519(kid: &str, x: &str) -> Self {
        Self {
            kty: "OKP".to_owned(),
            crv: "Ed25519".to_owned(),
            x: x.to_owned(),
            kid: kid.to_owned(),
            alg: "EdDSA".to_owned(),
            use_: "sig".to_owned(),
        }
    }

    /// The verification key, if this is an Ed25519 signing key we can use: the right type, use and
    /// algorithm, and 32 bytes that decode to a point on the curve.
    pub(crate) fn verifying_key(&self) -> Option<ed25519_dalek::VerifyingKey> {
        let usable = self.kty == "OKP"
            && self.crv == "Ed25519"
            && (self.alg.is_empty() || self.alg == "EdDSA")
            && (self.use_.is_empty() || self.use_ == "sig");
        if !usable {
            return None;
        }
        let x: [u8; 32] = URL_SAFE_NO_PAD.decode(&self.x).ok()?.try_into().ok()?;
        ed25519_dalek::VerifyingKey::from_bytes(&x).ok()
    }
}
