//! HTTP/JSON gateway for web and mobile clients: turns the tutorials' HTTP API into gRPC calls to
//! auth-service and resource-service, balanced per call over every replica of each, and serves
//! the web page. It keeps no session state and never verifies a token itself: it forwards the
//! caller's token, and the services verify it.

pub mod backend;
pub mod config;
pub mod error;
pub mod extract;
pub mod page;
pub mod routes;
pub mod startup;
pub mod state;

pub use config::Config;
pub use routes::app;
pub use startup::Application;
pub use state::AppState;
