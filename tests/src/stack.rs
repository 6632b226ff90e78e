//! The whole product as it runs in a cluster: several replicas of each service on PostgreSQL.

use std::net::{Ipv4Addr, SocketAddr};

use crate::{
    gateway::Gateway,
    postgres::Cluster,
    services::{AuthDeployment, AuthReplica, ResourceReplica},
};

pub struct Stack {
    pub deployment: AuthDeployment,
    pub resource_database_url: String,
    pub auth: Vec<AuthReplica>,
    pub resource: Vec<ResourceReplica>,
    pub gateways: Vec<Gateway>,
}

impl Stack {
    /// Starts `auth` auth-service replicas, then `resource` resource-service replicas (they need
    /// auth-service's keys), then `gateways` gateways, each layer started together and waited on
    /// until ready; every gateway sees every replica up before this returns. `name` prefixes the
    /// log files.
    pub async fn start(name: &str, auth: usize, resource: usize, gateways: usize) -> Self {
        Self::start_with(name, [auth, resource, gateways], &[], &[]).await
    }

    /// [`Stack::start`] with more settings for the auth-service and resource-service replicas.
    pub async fn start_with(
        name: &str,
        [auth, resource, gateways]: [usize; 3],
        auth_env: &[(&'static str, String)],
        resource_env: &[(&'static str, String)],
    ) -> Self {
        let (deployment, resource_database_url) =
            tokio::join!(AuthDeployment::create(), crate::create_database("resource"));
        Self::start_on_databases(
            name,
            [auth, resource, gateways],
            (deployment, resource_database_url),
            auth_env,
            resource_env,
        )
        .await
    }

    /// [`Stack::start`] with the databases on `cluster` instead of the one `DATABASE_URL`
    /// names, for a test that stops the database.
    pub async fn start_on(
        cluster: &Cluster,
        name: &str,
        [auth, resource, gateways]: [usize; 3],
    ) -> Self {
        let (auth_database_url, resource_database_url) = tokio::join!(
            crate::postgres::create_database_on(&cluster.admin_url, "auth"),
            crate::postgres::create_database_on(&cluster.admin_url, "resource"),
        );
        Self::start_on_databases(
            name,
            [auth, resource, gateways],
            (
                AuthDeployment::on_database(auth_database_url),
                resource_database_url,
            ),
            &[],
            &[],
        )
        .await
    }

    async fn start_on_databases(
        name: &str,
        [auth, resource, gateways]: [usize; 3],
        (mut deployment, resource_database_url): (AuthDeployment, String),
        auth_env: &[(&'static str, String)],
        resource_env: &[(&'static str, String)],
    ) -> Self {
        deployment.env = auth_env.to_vec();

        let mut auth: Vec<AuthReplica> = (0..auth)
            .map(|i| AuthReplica::spawn(&deployment, &format!("{name}-auth-{i}")))
            .collect();
        futures::future::join_all(auth.iter_mut().map(AuthReplica::wait_until_serving)).await;
        let auth_urls: Vec<String> = auth.iter().map(|r| r.url.clone()).collect();

        let mut resource: Vec<ResourceReplica> = (0..resource)
            .map(|i| {
                ResourceReplica::spawn_with(
                    SocketAddr::from((Ipv4Addr::LOCALHOST, crate::free_port())),
                    &resource_database_url,
                    &auth_urls,
                    &format!("{name}-resource-{i}"),
                    resource_env,
                )
            })
            .collect();
        futures::future::join_all(resource.iter_mut().map(ResourceReplica::wait_until_serving))
            .await;
        let resource_urls: Vec<String> = resource.iter().map(|r| r.url.clone()).collect();

        let mut gateways: Vec<Gateway> = (0..gateways)
            .map(|i| Gateway::spawn(&auth_urls, &resource_urls, &format!("{name}-gateway-{i}")))
            .collect();
        futures::future::join_all(
            gateways
                .iter_mut()
                .map(Gateway::wait_until_every_replica_is_up),
        )
        .await;

        Self {
            deployment,
            resource_database_url,
            auth,
            resource,
            gateways,
        }
    }
}
