//! What every handler shares: a balanced client per backend and the validated settings.

use std::{ops::Deref, sync::Arc};

use proto::{
    auth::v1::auth_service_server::SERVICE_NAME as AUTH_SERVICE,
    person::v1::person_service_server::SERVICE_NAME as PERSON_SERVICE,
};

use crate::{
    backend::{Backend, BackendConfig, Target},
    config::Settings,
};

/// Behind one `Arc`: axum clones the state for every request (into the route's handler service
/// and again for each `State` extractor), so a clone is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub auth: Backend,
    pub resource: Backend,
    pub settings: Arc<Settings>,
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// Resolves the backends' replicas and starts checking their health; connections are made
    /// on first use, so this succeeds while the backends are still starting.
    pub async fn connect(settings: Settings) -> anyhow::Result<Self> {
        let backend = |name, health_service, targets: &Vec<Target>| BackendConfig {
            name,
            health_service,
            targets: targets.clone(),
            health_interval: settings.health_interval,
            connect_timeout: settings.connect_timeout,
            tls: settings.tls.clone(),
        };
        Ok(Self(Arc::new(Shared {
            auth: Backend::start(backend(
                "auth-service",
                AUTH_SERVICE,
                &settings.auth_targets,
            ))
            .await?,
            resource: Backend::start(backend(
                "resource-service",
                PERSON_SERVICE,
                &settings.resource_targets,
            ))
            .await?,
            settings: Arc::new(settings),
        })))
    }
}
