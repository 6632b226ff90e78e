//! What every handler shares: a balanced client per backend and the HTTP settings.

use std::{sync::Arc, time::Duration};

use crate::{
    backend::{Backend, BackendConfig},
    config::Config,
};

#[derive(Clone)]
pub struct AppState {
    pub auth: Backend,
    pub resource: Backend,
    pub settings: Arc<Settings>,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub request_timeout: Duration,
    pub body_limit: usize,
    pub cors_origins: Vec<String>,
}

impl AppState {
    /// Resolves the backends' replicas and starts checking their health; connections are made
    /// on first use, so this succeeds while the backends are still starting.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let backend = |name, health_service, urls: &Vec<String>| BackendConfig {
            name,
            health_service,
            urls: urls.clone(),
            health_interval: config.health_interval,
            connect_timeout: config.connect_timeout,
        };
        Ok(Self {
            auth: Backend::start(backend(
                "auth-service",
                "auth.v1.AuthService",
                &config.auth_urls,
            ))
            .await?,
            resource: Backend::start(backend(
                "resource-service",
                "person.v1.PersonService",
                &config.resource_urls,
            ))
            .await?,
            settings: Arc::new(Settings {
                request_timeout: config.request_timeout,
                body_limit: config.body_limit,
                cors_origins: config.cors_origins.clone(),
            }),
        })
    }
}
