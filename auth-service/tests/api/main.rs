//! auth-service's integration tests: the service started in-process on port 0 and called through
//! the generated tonic client, on SQLite and on PostgreSQL.

// A failed unwrap is a failed test; the lint guards service code.
#![allow(clippy::unwrap_used)]

mod admin;
mod admin_races;
mod binary;
mod feed;
mod helpers;
mod keys;
mod metrics;
mod replicas;
mod rotation;
mod service_accounts;
mod serving;
mod sessions;
mod sign_in;
mod sign_up;
mod store;
mod throttle;
