//! The one conversion between a key as `auth.v1.GetJwks` carries it and [`token::Jwk`].

use proto::auth::v1::JsonWebKey;
use token::Jwk;

pub fn jwk_from_proto(key: JsonWebKey) -> Jwk {
    Jwk {
        kty: key.kty,
        crv: key.crv,
        x: key.x,
        kid: key.kid,
        alg: key.alg,
        use_: key.r#use,
    }
}

pub fn jwk_to_proto(key: &Jwk) -> JsonWebKey {
    JsonWebKey {
        kty: key.kty.clone(),
        crv: key.crv.clone(),
        x: key.x.clone(),
        kid: key.kid.clone(),
        alg: key.alg.clone(),
        r#use: key.use_.clone(),
    }
}

#[cfg(test)]
mod tests {
    use token::Ed25519Key;

    use super::*;

    #[test]
    fn a_key_survives_the_round_trip_through_protobuf() {
        let jwk = Ed25519Key::generate().public_jwk();
        assert_eq!(jwk_from_proto(jwk_to_proto(&jwk)), jwk);
    }
}
