//! auth-service: signs users up and in, issues access tokens, and publishes the keys that verify
//! them.
//!
//! A call flows `layers (request id, trace, authn) → grpc.rs handler → accounts.rs → store.rs`.
//! Passwords are hashed by `password.rs` on a fixed set of worker threads; the signing key is loaded
//! (or generated once for all replicas) by `signing.rs`; `feed.rs` pushes revocations to verifiers.
//! Guessing is throttled across replicas by `throttle.rs`, through the database.

pub mod accounts;
pub mod config;
pub mod domain;
pub mod error;
pub mod feed;
pub mod grpc;
pub mod keyring;
pub mod metrics;
pub mod password;
pub mod refresh_token;
pub mod service_accounts;
pub mod sessions;
pub mod signing;
pub mod startup;
pub mod store;
#[cfg(feature = "test-util")]
pub mod test_hooks;
pub mod throttle;

pub use config::{Config, Settings};
pub use startup::Application;
