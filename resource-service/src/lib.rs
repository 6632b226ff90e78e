//! Person records over gRPC. Every call's access token is verified locally (`authn`), with keys
//! fetched from auth-service in the background, so answering never depends on auth-service
//! being up.
//!
//! A call flows: layers (request id, trace, authn) → [`grpc`] handler → [`domain`] values →
//! [`store::Store`] (SQLite or PostgreSQL), and back out as protobuf or a `Status`.

pub mod config;
pub mod domain;
mod error;
pub mod grpc;
pub mod startup;
pub mod store;

pub use config::Config;
pub use error::Error;
pub use startup::Application;
