#![doc = include_str!("../README.md")]
//!
//! A call flows: layers (request id, trace, authn) → [`grpc`] handler → [`domain`] values →
//! [`store::Store`] (SQLite or PostgreSQL), and back out as protobuf or a `Status`.

pub mod config;
pub mod domain;
mod error;
pub mod grpc;
pub mod startup;
pub mod store;

pub use config::{Config, Settings};
pub use error::Error;
pub use startup::Application;
