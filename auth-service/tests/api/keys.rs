//! The signing key at rest: always sealed, with a generated key-encryption key on the laptop
//! default and a configured one on PostgreSQL, and nothing unsealed accepted once it is.

use std::{os::unix::fs::PermissionsExt, path::Path};

use auth_service::{
    Application, Config,
    store::{self, StoredKey},
};
use base64::Engine;
use secrecy::ExposeSecret;
use token::Ed25519Key;

use crate::helpers::{postgres_config, settings, spawn_with};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A key stored the way earlier releases stored it without a KEK, or an attacker would.
fn unsealed(generation: i64) -> (Ed25519Key, StoredKey) {
    let key = Ed25519Key::generate();
    let stored = StoredKey {
        kid: key.kid().to_owned(),
        generation,
        algorithm: "EdDSA".to_owned(),
        encryption: "none".to_owned(),
        private_key: key.seed().expose_secret().to_vec(),
        created_at: token::unix_now(),
        activates_at: 0,
    };
    (key, stored)
}

#[tokio::test]
async fn sqlite_without_a_kek_generates_one_owner_only_and_reuses_it_on_restart() {
    let config = Config::for_tests();
    let data = config.data_dir.clone();
    let app = spawn_with(config.clone()).await;
    let kid = app.jwks().await.keys[0].kid.clone();
    app.stop().await;

    let kek_file = data.join("key-encryption-key");
    let kek = std::fs::read_to_string(&kek_file).unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(kek.trim())
        .unwrap();
    assert_eq!(bytes.len(), 32);
    assert_eq!(mode(&kek_file), 0o600);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("auth.db")), 0o600);

    let db = store::connect(&format!("sqlite://{}", data.join("auth.db").display()), 1)
        .await
        .unwrap();
    let stored = db.signing_keys().await.unwrap();
    assert_eq!(stored[0].encryption, "xchacha20poly1305");
    assert_ne!(stored[0].private_key.len(), 32);
    db.close().await;

    let again = spawn_with(config).await;
    assert_eq!(again.jwks().await.keys[0].kid, kid);
    again.stop().await;
    assert_eq!(std::fs::read_to_string(&kek_file).unwrap(), kek);
}

#[tokio::test]
async fn an_unsealed_key_is_sealed_by_the_first_start_with_a_kek_and_refused_after() {
    let config = postgres_config().await;
    let url = config.database_url.clone().unwrap();
    let db = store::connect(url.expose_secret(), 1).await.unwrap();
    let (old, stored) = unsealed(1);
    assert!(db.insert_signing_key(&stored).await.unwrap());

    // A database from before key-encryption keys: its key is kept, and sealed.
    let app = spawn_with(config.clone()).await;
    assert_eq!(app.jwks().await.keys[0].kid, old.kid());
    app.stop().await;
    let keys = db.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].encryption, "xchacha20poly1305");
    assert_ne!(keys[0].private_key, stored.private_key);

    // From now on an unsealed row, here a higher generation that would become the active key,
    // stops every replica from starting instead of signing with a planted key.
    let (planted, row) = unsealed(2);
    assert!(db.insert_signing_key(&row).await.unwrap());
    let error = format!(
        "{:#}",
        Application::build(settings(config)).await.err().unwrap()
    );
    assert!(
        error.contains(&format!(
            "signing key {:?} is stored unsealed",
            planted.kid()
        )),
        "{error}"
    );
    let keys = db.signing_keys().await.unwrap();
    assert_eq!(
        keys[0].encryption, "none",
        "the planted row is left as found"
    );
    db.close().await;
}

#[tokio::test]
async fn a_missing_kek_file_with_sealed_keys_stops_start_up_and_writes_nothing() {
    let config = Config::for_tests();
    let kek_file = config.data_dir.join("key-encryption-key");
    let app = spawn_with(config.clone()).await;
    app.stop().await;
    std::fs::remove_file(&kek_file).unwrap();

    let error = format!(
        "{:#}",
        Application::build(settings(config)).await.err().unwrap()
    );
    assert!(
        error.contains(&format!(
            "the key-encryption key file {} is missing, but the database holds signing keys sealed with it: restore that file",
            kek_file.display()
        )),
        "{error}"
    );
    assert!(
        !error.contains("AUTH_KEY_ENCRYPTION_KEY"),
        "no variable was set: {error}"
    );
    assert!(
        !kek_file.exists(),
        "a useless new key was written where the real one belongs"
    );
}
