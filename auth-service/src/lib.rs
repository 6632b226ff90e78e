//! auth-service: signs users up and in, issues access tokens, and publishes the keys that verify
//! them.
//!
//! A call flows `layers (request id, trace, authn) → grpc.rs handler → accounts.rs → store.rs`.
//! Passwords are hashed by `password.rs` on a bounded blocking pool; the signing key is loaded
//! (or generated once for all replicas) by `signing.rs`.

pub mod accounts;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod password;
pub mod refresh_token;
pub mod sessions;
pub mod signing;
pub mod startup;
pub mod store;

pub use config::{Config, Settings};
pub use startup::Application;
