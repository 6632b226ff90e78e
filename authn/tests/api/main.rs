//! authn's integration tests: real gRPC servers on port 0 guarded by the layer or the
//! interceptor, keys from a real JWKS endpoint, and real clients with the bearer layer.

// A failed unwrap is a failed test; the lint guards library code.
#![allow(clippy::unwrap_used)]

mod client;
mod interceptor;
mod jwks;
mod support;
