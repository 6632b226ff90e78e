//! The gateway's HTTP API against in-process services.

mod abuse;
mod admin;
mod auth;
mod balancing;
mod boards;
mod errors;
mod helpers;
mod idle;
mod memory;
mod meta;
mod metadata;
mod metrics;
mod oauth;
mod openapi;
mod persons;
mod service_accounts;
mod sessions;
mod stack;
mod startup;
mod throttle;
