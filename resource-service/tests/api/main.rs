//! resource-service's integration tests: the service started in-process on a random port, with a
//! real auth-service or a stand-in key server where a test needs to sign its own tokens.

// A failed unwrap is a failed test; the lint guards service code.
#![allow(clippy::unwrap_used)]

mod access;
mod auth_service;
mod binary;
mod helpers;
mod jwks;
mod metrics;
mod pagination;
mod persons;
mod revocation;
mod serving;
mod store;
