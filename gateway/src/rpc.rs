//! A backend call on behalf of one HTTP request, written once: the generated client with the
//! request's metadata attached by an interceptor, a replica picked (and perhaps a retry) by
//! [`Backend::call`], and a failure turned into the API's error.

use proto::{
    auth::v1::auth_service_client::AuthServiceClient,
    person::v1::person_service_client::PersonServiceClient,
};
use telemetry::TraceContext;
use tonic::{
    GrpcMethod, Status,
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
};

use crate::{
    backend::{Backend, Conn, Safety},
    error::ApiError,
    extract::UserAgent,
};

/// auth-service's client for one attempt of one call.
pub type AuthClient = AuthServiceClient<InterceptedService<Conn, Outgoing>>;
/// resource-service's client for one attempt of one call.
pub type PersonClient = PersonServiceClient<InterceptedService<Conn, Outgoing>>;

/// A generated client that sends [`Outgoing`] metadata with every call.
pub trait Client {
    fn new(conn: Conn, outgoing: Outgoing) -> Self;
}

impl Client for AuthClient {
    fn new(conn: Conn, outgoing: Outgoing) -> Self {
        AuthServiceClient::with_interceptor(conn, outgoing)
    }
}

impl Client for PersonClient {
    fn new(conn: Conn, outgoing: Outgoing) -> Self {
        PersonServiceClient::with_interceptor(conn, outgoing)
    }
}

/// The metadata every backend call of one HTTP request carries: the caller's token (unless the
/// call is public), the request id, the trace (`traceparent`, a new span id for each attempt,
/// and `tracestate`), and the client's address. Cloned into each attempt.
#[derive(Clone, Debug)]
pub struct Outgoing {
    authorization: Option<AsciiMetadataValue>,
    request_id: Option<AsciiMetadataValue>,
    trace: Option<TraceContext>,
    /// Exactly one IP address, sent as `x-forwarded-for`, with the forwarding secret.
    client_addr: Option<ForwardedAddr>,
    /// The browser's `User-Agent`, sent as `x-client-user-agent` on the calls that start or
    /// renew a session (auth-service shows it in the session list).
    user_agent: Option<AsciiMetadataValue>,
}

/// The client's address the gateway found, and the secret (`GATEWAY_FORWARDING_SECRET`, marked
/// sensitive) by which the services know the gateway found it.
#[derive(Clone, Debug)]
pub struct ForwardedAddr {
    pub address: AsciiMetadataValue,
    pub secret: Option<AsciiMetadataValue>,
}

impl Outgoing {
    pub(crate) fn new(
        authorization: Option<AsciiMetadataValue>,
        request_id: Option<AsciiMetadataValue>,
        trace: Option<TraceContext>,
        client_addr: Option<ForwardedAddr>,
    ) -> Self {
        Self {
            authorization,
            request_id,
            trace,
            client_addr,
            user_agent: None,
        }
    }

    /// The same metadata plus the client's user agent.
    pub fn with_user_agent(mut self, user_agent: &UserAgent) -> Self {
        self.user_agent = user_agent.metadata();
        self
    }

    /// The HTTP form of a backend's error: a 401 says whether a token was sent, and a call
    /// carries one exactly when the caller sent a usable one.
    pub fn error(&self, status: &Status) -> ApiError {
        ApiError::from_status(status, self.authorization.is_some())
    }
}

impl Interceptor for Outgoing {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let metadata = request.metadata_mut();
        // `insert` replaces: whatever else set these names, the services see only our values.
        let (client_addr, forwarding_secret) = match &self.client_addr {
            Some(forwarded) => (Some(&forwarded.address), forwarded.secret.as_ref()),
            None => (None, None),
        };
        for (name, value) in [
            ("authorization", self.authorization.as_ref()),
            ("x-request-id", self.request_id.as_ref()),
            ("x-forwarded-for", client_addr),
            ("x-forwarding-secret", forwarding_secret),
            ("x-client-user-agent", self.user_agent.as_ref()),
        ] {
            if let Some(value) = value {
                metadata.insert(name, value.clone());
            }
        }
        if let Some(trace) = &self.trace {
            trace.inject(metadata);
        }
        if telemetry::otlp::exporting() {
            // The attempt's span (see `Backend::call`) is named after the method it calls.
            if let Some(method) = request.extensions().get::<GrpcMethod>() {
                telemetry::otlp::rename_current_span(format!(
                    "{}/{}",
                    method.service(),
                    method.method()
                ));
            }
        }
        Ok(request)
    }
}

impl Backend {
    /// Calls `rpc` (a generated client's method, e.g. `AuthClient::get_me`) with `message`, on
    /// another replica when it fails in a way `safety` allows retrying, and maps a failure to
    /// the API's error.
    pub async fn rpc<C, M, T, F>(
        &self,
        outgoing: &Outgoing,
        safety: Safety,
        rpc: F,
        message: M,
    ) -> Result<T, ApiError>
    where
        C: Client,
        M: Clone,
        F: AsyncFn(&mut C, M) -> Result<tonic::Response<T>, Status>,
    {
        let rpc = &rpc;
        self.call(safety, |conn| {
            let mut client = C::new(conn, outgoing.clone());
            let message = message.clone();
            async move { rpc(&mut client, message).await }
        })
        .await
        .map_err(|status| outgoing.error(&status))
    }
}
