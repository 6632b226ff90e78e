//! An example internal service, and the guide's code (see README.md): `directory.v1.Directory`
//! answers the names of the persons resource-service holds. It verifies every caller's token
//! itself with `authn`'s interceptor (keys from auth-service's JWKS, revocations from its feed),
//! and calls resource-service as itself, with its service account's token from the
//! client-credentials grant (`authn::client::ClientCredentials`), or, when it has no account
//! configured, with each caller's own token.

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use authn::{
    Access, Gate, JwksSource, JwksSourceConfig, Keys, RevocationConfig, RevocationFollower,
    TokenCache,
    client::{Bearer, BearerLayer, ClientCredentials, Forwarded, Tokens},
};
use clap::Parser;
use proto::person::v1::{ListPersonsRequest, person_service_client::PersonServiceClient};
use secrecy::SecretString;
use settings::{ClientCredentialSettings, ConfigError};
use token::{Audience, Claims};
use tokio::net::TcpListener;
use tonic::{
    Code, Request, Response, Status,
    service::Routes,
    transport::{Channel, Endpoint},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::ServiceBuilder;

/// The code generated from `proto/directory/v1/directory.proto`.
pub mod pb {
    tonic::include_proto!("directory.v1");
}

use pb::{
    ListNamesRequest, ListNamesResponse,
    directory_server::{Directory, DirectoryServer, SERVICE_NAME},
};

/// How many names one answer holds at most, in pages of the most resource-service gives.
const MAX_NAMES: usize = 1_000;
const PAGE_SIZE: i32 = 100;

#[derive(Parser, Clone, Debug)]
#[command(
    name = "directory",
    version,
    about = "Example internal service: the names of the persons in resource-service, for signed-in callers."
)]
pub struct Config {
    /// Address the gRPC server listens on; port 0 picks a free port.
    #[arg(long, env = "DIRECTORY_GRPC_ADDR", default_value = "127.0.0.1:50053")]
    pub grpc_addr: SocketAddr,

    /// auth-service replicas to fetch the token keys (JWKS) from and follow the revocation feed
    /// of, comma-separated.
    #[arg(
        long,
        env = "DIRECTORY_AUTH_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051"
    )]
    pub auth_url: Vec<String>,

    /// resource-service replicas to call, comma-separated; calls are spread over them.
    #[arg(
        long,
        env = "DIRECTORY_RESOURCE_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50052"
    )]
    pub resource_url: Vec<String>,

    /// The `iss` every accepted token must carry.
    #[arg(long, env = "DIRECTORY_TOKEN_ISSUER", default_value_t = Audience::default().issuer)]
    pub token_issuer: String,

    /// The `aud` every accepted token must carry.
    #[arg(long, env = "DIRECTORY_TOKEN_AUDIENCE", default_value_t = Audience::default().audience)]
    pub token_audience: String,

    /// The directory's service account (its client id): resource-service is called with this
    /// account's own tokens, from auth-service's client-credentials grant at DIRECTORY_AUTH_URL.
    /// Unset: each call to resource-service carries the caller's own token instead.
    #[arg(long, env = "DIRECTORY_CLIENT_ID")]
    pub client_id: Option<String>,

    /// The service account's client secret.
    #[arg(long, env = "DIRECTORY_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<SecretString>,

    /// A file holding the client secret, instead of DIRECTORY_CLIENT_SECRET (a mounted Secret;
    /// one trailing newline is dropped).
    #[arg(long, env = "DIRECTORY_CLIENT_SECRET_FILE")]
    pub client_secret_file: Option<PathBuf>,
}

/// Where the directory's client credentials come from.
pub const CLIENT_CREDENTIALS: ClientCredentialSettings = ClientCredentialSettings {
    client_id: "DIRECTORY_CLIENT_ID",
    client_secret: "DIRECTORY_CLIENT_SECRET",
    client_secret_file: "DIRECTORY_CLIENT_SECRET_FILE",
};

/// [`Config`] checked: every URL parses, the client credentials are whole.
#[derive(Clone, Debug)]
pub struct Settings {
    pub grpc_addr: SocketAddr,
    pub auth_urls: Vec<String>,
    pub resource: Vec<Endpoint>,
    pub audience: Audience,
    /// The directory's own identity; `None`: callers' tokens are forwarded.
    pub credentials: Option<settings::ClientCredentials>,
}

/// The runtime's default: one worker thread per CPU.
impl settings::WorkerThreads for Config {}

impl TryFrom<Config> for Settings {
    type Error = ConfigError;

    fn try_from(config: Config) -> Result<Self, ConfigError> {
        let auth_urls = urls(config.auth_url, "DIRECTORY_AUTH_URL")?;
        for url in &auth_urls {
            Endpoint::from_shared(url.clone()).map_err(|_| {
                ConfigError::new("DIRECTORY_AUTH_URL", format!("{url:?} is not a URL"))
            })?;
        }
        let resource = urls(config.resource_url, "DIRECTORY_RESOURCE_URL")?
            .into_iter()
            .map(|url| {
                Endpoint::from_shared(url.clone())
                    .map(|e| e.connect_timeout(Duration::from_secs(2)))
                    .map_err(|_| {
                        ConfigError::new("DIRECTORY_RESOURCE_URL", format!("{url:?} is not a URL"))
                    })
            })
            .collect::<Result<_, _>>()?;
        let credentials = settings::client_credentials(
            config.client_id,
            config.client_secret,
            config.client_secret_file.as_deref(),
            CLIENT_CREDENTIALS,
        )?;
        Ok(Self {
            grpc_addr: config.grpc_addr,
            auth_urls,
            resource,
            audience: Audience {
                issuer: config.token_issuer,
                audience: config.token_audience,
            },
            credentials,
        })
    }
}

fn urls(list: Vec<String>, setting: &'static str) -> Result<Vec<String>, ConfigError> {
    let list: Vec<String> = list
        .into_iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    if list.is_empty() {
        return Err(ConfigError::new(setting, "at least one URL is needed"));
    }
    Ok(list)
}

/// Who the directory is when it calls resource-service.
#[derive(Clone)]
pub enum Identity {
    /// Itself: its service account's tokens, one token shared by every call and renewed
    /// before it expires.
    Own(Tokens),
    /// Each caller: the token the caller sent, forwarded as it is.
    Forwarded,
}

/// The service: every handler runs after the interceptor verified the caller.
#[derive(Clone)]
pub struct Names {
    resource: Channel,
    identity: Identity,
}

impl Names {
    pub fn new(resource: Channel, identity: Identity) -> Self {
        Self { resource, identity }
    }

    /// A resource-service client whose calls carry the directory's own token, or `caller`'s.
    fn persons(&self, caller: &str) -> PersonServiceClient<Bearer<Channel>> {
        let layer = match &self.identity {
            Identity::Own(tokens) => BearerLayer::with_tokens(tokens.clone()),
            Identity::Forwarded => BearerLayer::new(Forwarded::new(caller)),
        };
        PersonServiceClient::new(
            ServiceBuilder::new()
                .layer(layer)
                .service(self.resource.clone()),
        )
    }

    /// resource-service's refusals that concern the caller pass through with their code;
    /// anything else is ours to log and answer. With the directory's own identity, a refused
    /// token is the directory's problem, not the caller's: UNAVAILABLE, and an ERROR log.
    fn resource_service_failed(&self, status: Status) -> Status {
        let own = matches!(self.identity, Identity::Own(_));
        match status.code() {
            Code::Unauthenticated | Code::PermissionDenied if own => {
                tracing::error!(code = ?status.code(), message = status.message(), "resource-service refused the directory's own token");
                Status::unavailable(
                    "the directory's own credentials were refused; it cannot call resource-service now",
                )
            }
            Code::Unauthenticated
            | Code::PermissionDenied
            | Code::InvalidArgument
            | Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted => Status::new(
                status.code(),
                format!("resource-service: {}", status.message()),
            ),
            _ => {
                tracing::error!(code = ?status.code(), message = status.message(), "resource-service failed");
                Status::internal("internal error")
            }
        }
    }
}

#[tonic::async_trait]
impl Directory for Names {
    async fn list_names(
        &self,
        request: Request<ListNamesRequest>,
    ) -> Result<Response<ListNamesResponse>, Status> {
        // Put there by the interceptor; the token it came from is forwarded when the directory
        // has no identity of its own.
        let caller = request.extensions().get::<Arc<Claims>>().cloned();
        let token = authn::bearer_token(request.metadata().as_ref())
            .ok()
            .flatten()
            .map(str::to_owned);
        let (Some(caller), Some(token)) = (caller, token) else {
            // Only if the server were built without the interceptor.
            tracing::error!("ListNames reached without a verified caller");
            return Err(Status::internal("internal error"));
        };
        let mut persons = self.persons(&token);
        let filter = request.into_inner().name_filter;
        let mut names = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = persons
                .list_persons(ListPersonsRequest {
                    page_size: PAGE_SIZE,
                    page_token,
                    name_filter: filter.clone(),
                })
                .await
                .map_err(|status| self.resource_service_failed(status))?
                .into_inner();
            names.extend(page.persons.into_iter().map(|p| p.name));
            if names.len() > MAX_NAMES || page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let truncated = names.len() > MAX_NAMES;
        names.truncate(MAX_NAMES);
        tracing::debug!(caller = caller.sub, count = names.len(), "listed names");
        Ok(Response::new(ListNamesResponse { names, truncated }))
    }
}

/// A built service: port bound, keys and revocations being fetched. Nothing is served until
/// [`Application::run_until_stopped`].
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    keys: Keys,
    gate: Gate,
    resource: Channel,
    identity: Identity,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let (listener, local_addr) = telemetry::bind(settings.grpc_addr).await?;
        let keys = JwksSource::start(JwksSourceConfig::new(
            settings.auth_urls.clone(),
            settings.audience,
        ))
        .await?;
        let revocations =
            RevocationFollower::start(RevocationConfig::new(settings.auth_urls.clone()))?;
        let gate = Gate::new(keys.clone(), TokenCache::default()).with_revocations(revocations);
        let resource = Channel::balance_list(settings.resource.into_iter());
        let identity = match settings.credentials {
            Some(credentials) => {
                tracing::info!(
                    client_id = credentials.client_id,
                    "calling resource-service as the service account"
                );
                Identity::Own(Tokens::new(ClientCredentials::new(
                    &settings.auth_urls,
                    credentials.client_id,
                    credentials.client_secret,
                )?))
            }
            None => {
                tracing::info!(
                    "no DIRECTORY_CLIENT_ID: calling resource-service with each caller's own token"
                );
                Identity::Forwarded
            }
        };
        tracing::info!(%local_addr, "directory built");
        Ok(Self {
            listener,
            local_addr,
            keys,
            gate,
            resource,
            identity,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then drains like every service of the product.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (reporter, health) = tonic_health::server::health_reporter();
        telemetry::report_health(&reporter, SERVICE_NAME, ServingStatus::NotServing).await;
        // The one line that protects the service: every method needs a signed-in caller.
        let directory = DirectoryServer::with_interceptor(
            Names::new(self.resource, self.identity.clone()),
            self.gate.interceptor(Access::SignedIn),
        );
        // The first token now, so wrong credentials show in the log at start (the source logs
        // invalid_client) rather than at the first call.
        if let Identity::Own(tokens) = self.identity {
            tokio::spawn(async move {
                if tokens.header().await.is_ok() {
                    tracing::info!("got the service account's first access token");
                }
            });
        }
        let routes = Routes::new(health).add_service(directory);
        let ready = tokio::spawn(report_ready(reporter.clone(), self.keys));
        let draining = async move {
            ready.abort();
            telemetry::report_health(&reporter, SERVICE_NAME, ServingStatus::NotServing).await;
        };
        telemetry::serve_grpc(
            telemetry::GrpcLimits::default(),
            None,
            self.listener,
            telemetry::grpc_layers(Vec::new(), None),
            routes,
            shutdown,
            draining,
        )
        .await
        .context("the gRPC server failed")
    }
}

/// SERVING once a token key is known: before that every call would be refused.
async fn report_ready(reporter: HealthReporter, keys: Keys) {
    while keys.verifier().key_count() == 0 {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    telemetry::report_health(&reporter, SERVICE_NAME, ServingStatus::Serving).await;
    tracing::info!("serving");
}
