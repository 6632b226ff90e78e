//! The gateway's HTTP API against in-process services.

mod errors;
mod helpers;
mod openapi;
