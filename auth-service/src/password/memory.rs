//! Argon2 into memory a worker owns: PHC strings are hashed and verified in one block of
//! [`BLOCK_BYTES`] that is allocated once and reused, instead of the 19 MiB the `argon2` crate
//! would allocate (and free) for every hash.
//!
//! New hashes are argon2id v19 at OWASP's parameters. A stored hash is verified with its own
//! variant, version and parameters, as the crate's `PasswordVerifier` does: one that needs no
//! more memory than the block uses the block; a larger one (up to [`MAX_FALLBACK_BLOCKS`]) gets a
//! one-off allocation of its size for that check, freed right after. Every hash this service
//! has stored is at the OWASP parameters, so the fallback is only for hashes written elsewhere.

use anyhow::anyhow;
use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, Salt, SaltString},
};

/// The memory cost of new hashes, in KiB (argon2's `m`).
const M_COST: u32 = 19 * 1024;

/// OWASP's argon2id recommendation: 19 MiB of memory, 2 passes, 1 lane.
pub(super) fn params() -> Params {
    // These constants are within argon2's limits, so `new` cannot fail; the fallback is the
    // crate's own default (which is the same recommendation).
    Params::new(M_COST, 2, 1, None).unwrap_or_default()
}

/// The memory one worker owns: `m` KiB, one argon2 block per KiB (with one lane, `m` is a
/// multiple of the 4 sync points, so no block is left out).
pub const BLOCK_BYTES: u64 = M_COST as u64 * Block::SIZE as u64;

/// The largest stored hash verified with a one-off allocation: 64 MiB, RFC 9106's
/// recommendation for memory-constrained settings. A larger one is refused as unusable rather
/// than allowed to allocate whatever a database row says.
pub const MAX_FALLBACK_BLOCKS: usize = 64 * 1024;

/// A worker's argon2 memory.
pub(super) struct Memory {
    blocks: Vec<Block>,
}

impl Memory {
    /// Allocates (and touches) the block for the service's parameters.
    pub(super) fn new() -> Self {
        Self {
            blocks: vec![Block::default(); params().block_count()],
        }
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) with a fresh random salt.
    pub(super) fn hash(&mut self, password: &[u8]) -> anyhow::Result<String> {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let hash = self
            .compute(
                password,
                Algorithm::Argon2id,
                Version::V0x13,
                params(),
                salt.as_salt(),
            )
            .map_err(|e| anyhow!("failed to hash password: {e}"))?;
        Ok(hash.to_string())
    }

    /// Whether `password` matches the PHC string `stored`, compared in constant time (the
    /// crate's `Output` equality).
    pub(super) fn verify(&mut self, password: &[u8], stored: &str) -> anyhow::Result<bool> {
        let unusable =
            |e: argon2::password_hash::Error| anyhow!("stored password hash is invalid: {e}");
        let stored = PasswordHash::new(stored).map_err(unusable)?;
        let algorithm = Algorithm::try_from(stored.algorithm).map_err(unusable)?;
        let version = stored
            .version
            .map(Version::try_from)
            .transpose()
            .map_err(|e| unusable(e.into()))?
            .unwrap_or_default();
        let params = Params::try_from(&stored).map_err(unusable)?;
        let (Some(salt), Some(expected)) = (stored.salt, stored.hash) else {
            return Err(anyhow!("stored password hash has no salt or no hash"));
        };
        let computed = self
            .compute(password, algorithm, version, params, salt)
            .map_err(unusable)?;
        Ok(computed.hash == Some(expected))
    }

    /// What the crate's `PasswordHasher::hash_password` computes, into this memory.
    fn compute<'a>(
        &mut self,
        password: &[u8],
        algorithm: Algorithm,
        version: Version,
        params: Params,
        salt: Salt<'a>,
    ) -> argon2::password_hash::Result<PasswordHash<'a>> {
        let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
        let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
        let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let needed = params.block_count();
        let hash = |out: &mut [u8], blocks: &mut [Block]| {
            argon2
                .hash_password_into_with_memory(password, salt_bytes, out, blocks)
                .map_err(Into::into)
        };
        let output = if needed <= self.blocks.len() {
            Output::init_with(output_len, |out| hash(out, &mut self.blocks[..needed]))?
        } else if needed <= MAX_FALLBACK_BLOCKS {
            let mut blocks = vec![Block::default(); needed];
            Output::init_with(output_len, |out| hash(out, &mut blocks))?
        } else {
            return Err(argon2::password_hash::Error::ParamValueInvalid(
                argon2::password_hash::errors::InvalidValue::TooLong,
            ));
        };
        Ok(PasswordHash {
            algorithm: algorithm.ident(),
            version: Some(version.into()),
            params: ParamsString::try_from(&params)?,
            salt: Some(salt),
            hash: Some(output),
        })
    }
}

/// A PHC string at the service's parameters that no password matches (its hash is random
/// bytes), checked for an unknown user so that answer costs one hash like a wrong password.
pub(super) fn dummy_hash() -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params()).map_err(|e| anyhow!("{e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(
            Output::new(&rand::random::<[u8; Params::DEFAULT_OUTPUT_LEN]>())
                .map_err(|e| anyhow!("{e}"))?,
        ),
    };
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHasher as _, PasswordVerifier as _};

    use super::*;

    #[test]
    fn a_hash_is_what_the_crate_computes_and_verifies() {
        let mut memory = Memory::new();
        let hash = memory.hash(b"correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(memory.verify(b"correct horse", &hash).unwrap());
        assert!(!memory.verify(b"wrong horse", &hash).unwrap());
    }

    /// Hashes the crate made with other variants, versions and parameters, smaller and larger
    /// than the block, still verify.
    #[test]
    fn hashes_with_other_parameters_verify() {
        let mut memory = Memory::new();
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        for (algorithm, version, m, t, p, len) in [
            (Algorithm::Argon2id, Version::V0x13, 19 * 1024, 2, 1, 32),
            (Algorithm::Argon2id, Version::V0x13, 7 * 1024, 5, 1, 32),
            (Algorithm::Argon2id, Version::V0x13, 8 * 1024, 1, 4, 16),
            (Algorithm::Argon2i, Version::V0x13, 4 * 1024, 3, 1, 32),
            (Algorithm::Argon2d, Version::V0x10, 4 * 1024, 1, 2, 64),
            (Algorithm::Argon2id, Version::V0x13, 46 * 1024, 1, 1, 32),
        ] {
            let params = Params::new(m, t, p, Some(len)).unwrap();
            let hash = Argon2::new(algorithm, version, params)
                .hash_password(b"correct horse", &salt)
                .unwrap()
                .to_string();
            assert!(memory.verify(b"correct horse", &hash).unwrap(), "{hash}");
            assert!(!memory.verify(b"correct horsf", &hash).unwrap(), "{hash}");
        }
    }

    #[test]
    fn an_unusable_stored_hash_is_an_error_not_a_mismatch() {
        let mut memory = Memory::new();
        for stored in [
            "$argon2id$stub",
            "not a hash",
            "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E",
            // 256 MiB: more than a stored hash may make a worker allocate.
            "$argon2id$v=19$m=262144,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI",
        ] {
            assert!(memory.verify(b"anything", stored).is_err(), "{stored}");
        }
    }

    #[test]
    fn no_password_matches_the_dummy_hash() {
        let mut memory = Memory::new();
        let dummy = dummy_hash().unwrap();
        assert!(dummy.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(!memory.verify(b"", &dummy).unwrap());
        assert_ne!(dummy, dummy_hash().unwrap());
    }

    #[test]
    fn the_block_is_19_mib() {
        assert_eq!(BLOCK_BYTES, 19 * 1024 * 1024);
        assert_eq!(
            Memory::new().blocks.len() as u64 * Block::SIZE as u64,
            BLOCK_BYTES
        );
    }
}
