#![doc = include_str!("../README.md")]

pub mod backend;
pub mod body_budget;
pub mod call_layer;
pub mod client_addr;
pub mod config;
pub mod error;
pub mod extract;
pub mod limits;
pub mod metrics;
pub mod oauth;
pub mod page;
pub mod refresh_cookie;
pub mod routes;
pub mod rpc;
pub mod serve;
pub mod startup;
pub mod state;

pub use config::{Config, Settings};
pub use routes::app;
pub use startup::Application;
pub use state::AppState;
