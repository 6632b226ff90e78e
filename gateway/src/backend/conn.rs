//! One replica's HTTP/2 connection, used straight from the task of the request that calls.
//!
//! Why not tonic's `Channel`: every call through a `Channel` is handed to a tower `Buffer`
//! worker task, then to hyper's dispatch task, which spawns a task per call to wait for the
//! answer: four task hand-offs (and often as many thread wake-ups) per call on top of the
//! connection's own. Here the calling task opens the HTTP/2 stream itself (h2's `SendRequest` is
//! shared by every caller) and the connection task wakes it when the answer arrives.
//!
//! What the `Channel` did and this keeps: the connection is made on first use and made again
//! after it broke (the next call dials); dialling is bounded by the connect timeout, the TCP
//! socket has `TCP_NODELAY`, an `https://` replica is dialled over TLS (rustls, ALPN `h2`)
//! checking its certificate against the name the address was resolved from, and a ping every
//! 10 s that gets no answer within 5 s drops the connection (a replica that vanished without
//! closing it). A call that fails before its request was handed to the connection fails with a
//! [`tonic::ConnectError`], which tonic answers as UNAVAILABLE and [`super::classify`] as never
//! reached.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, Uri, uri::Authority, uri::Scheme};
use http_body::Frame;
use http_body_util::BodyExt as _;
use tokio::net::TcpStream;
use tokio_rustls::{
    TlsConnector,
    rustls::{self, pki_types::ServerName},
};
use tonic::{ConnectError, body::Body};

use authn::tls::{ClientTls, EndpointProblem, InvalidEndpoint};

/// How often an open connection is pinged, and how long the answer may take.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The windows hyper's client (what tonic's `Channel` used) opens with.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A new connection's handle, and its own future, which runs until the connection ends.
type Dialled = (
    h2::client::SendRequest<Bytes>,
    Pin<Box<dyn Future<Output = ()> + Send>>,
);

/// A cheap handle on one replica's connection: a tower service the generated clients accept.
#[derive(Clone)]
pub struct Conn {
    shared: Arc<Shared>,
}

struct Shared {
    scheme: Scheme,
    authority: Authority,
    /// Where to dial: the replica's address.
    addr: String,
    /// TLS, with the name the certificate must be for.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    /// The open connection, if any, with the number it was made as.
    current: Mutex<Option<(u64, h2::client::SendRequest<Bytes>)>>,
    /// Held while dialling, so that concurrent calls make one connection, not one each.
    dialling: tokio::sync::Mutex<()>,
    made: AtomicU64,
}

impl Conn {
    /// A connection to the replica at `uri` (`http://` or `https://`, an address), made on first
    /// use; an `https://` replica's certificate must be for `server_name` and come from `tls`'s
    /// CA.
    pub fn lazy(
        uri: &str,
        server_name: &str,
        tls: Option<&ClientTls>,
        connect_timeout: Duration,
    ) -> Result<Self, InvalidEndpoint> {
        let invalid = |problem| InvalidEndpoint {
            url: uri.to_owned(),
            problem,
        };
        let parsed: Uri = uri.parse().map_err(|_| invalid(EndpointProblem::NotAUrl))?;
        let (Some(scheme), Some(authority)) = (parsed.scheme(), parsed.authority()) else {
            return Err(invalid(EndpointProblem::NotAUrl));
        };
        let https = match scheme.as_str() {
            "http" => false,
            "https" => true,
            _ => return Err(invalid(EndpointProblem::NotAUrl)),
        };
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let tls = tls.ok_or_else(|| invalid(EndpointProblem::NoCa))?;
            let name = ServerName::try_from(server_name.to_owned())
                .map_err(|_| invalid(EndpointProblem::Tls))?;
            Some((
                connector(tls).ok_or_else(|| invalid(EndpointProblem::Tls))?,
                name,
            ))
        } else {
            None
        };
        Ok(Self {
            shared: Arc::new(Shared {
                scheme: scheme.clone(),
                authority: authority.clone(),
                addr: format!("{}:{port}", authority.host()),
                tls,
                connect_timeout,
                current: Mutex::new(None),
                dialling: tokio::sync::Mutex::new(()),
                made: AtomicU64::new(0),
            }),
        })
    }

    /// One call: the open connection (dialled first if there is none), a stream on it, the
    /// request's body sent whole, and the answer's headers.
    async fn send(self, request: Request<Body>) -> Result<Response<Body>, BoxError> {
        let (mut parts, body) = request.into_parts();
        // The generated clients give a path only.
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(self.shared.scheme.clone());
        uri.authority = Some(self.shared.authority.clone());
        parts.uri = Uri::from_parts(uri)?;
        parts.version = http::Version::HTTP_2;
        // A unary call's body is one encoded message, already in memory.
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        let data = collected.to_bytes();

        let (made, sender) = self.shared.sender().await?;
        let mut sender = match sender.ready().await {
            Ok(sender) => sender,
            Err(error) => {
                // The connection is gone and the request was never handed to it.
                self.shared.forget(made);
                return Err(ConnectError(error.into()).into());
            }
        };
        let end_at_headers = data.is_empty() && trailers.is_none();
        let (response, mut stream) =
            sender.send_request(Request::from_parts(parts, ()), end_at_headers)?;
        if !end_at_headers {
            stream.send_data(data, trailers.is_none())?;
            if let Some(trailers) = trailers {
                stream.send_trailers(trailers)?;
            }
        }
        let response = response.await?;
        Ok(response.map(|stream| {
            Body::new(RecvBody {
                stream,
                data_done: false,
            })
        }))
    }
}

impl Shared {
    /// The open connection, or a new one.
    async fn sender(self: &Arc<Self>) -> Result<(u64, h2::client::SendRequest<Bytes>), BoxError> {
        if let Some(open) = self.open() {
            return Ok(open);
        }
        let _dialling = self.dialling.lock().await;
        // Another call may have dialled while this one waited.
        if let Some(open) = self.open() {
            return Ok(open);
        }
        let sender = tokio::time::timeout(self.connect_timeout, self.dial())
            .await
            .map_err(|_| ConnectError("connection timed out".into()))?
            .map_err(ConnectError)?;
        let made = self.made.fetch_add(1, Ordering::Relaxed) + 1;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((made, sender.0.clone()));
        let shared = Arc::downgrade(self);
        let connection = sender.1;
        tokio::spawn(async move {
            connection.await;
            if let Some(shared) = shared.upgrade() {
                shared.forget(made);
            }
        });
        Ok((made, sender.0))
    }

    fn open(&self) -> Option<(u64, h2::client::SendRequest<Bytes>)> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Drops connection number `made` if it is still the current one, so the next call dials.
    fn forget(&self, made: u64) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|(n, _)| *n == made) {
            *current = None;
        }
    }

    /// Dials the replica and starts HTTP/2 on the socket.
    async fn dial(&self) -> Result<Dialled, BoxError> {
        let tcp = TcpStream::connect(self.addr.as_str()).await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => handshake(tcp).await,
            Some((connector, name)) => handshake(connector.connect(name.clone(), tcp).await?).await,
        }
    }
}

fn connector(tls: &ClientTls) -> Option<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in tls.ca_certificates() {
        roots.add(certificate).ok()?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Some(TlsConnector::from(Arc::new(config)))
}

async fn handshake<T>(io: T) -> Result<Dialled, BoxError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, mut connection) = h2::client::Builder::new()
        .enable_push(false)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Bytes>(io)
        .await?;
    let mut ping_pong = connection
        .ping_pong()
        .expect("the first call of ping_pong returns it");
    let run = async move {
        let keep_alive = async {
            loop {
                tokio::time::sleep(KEEP_ALIVE_INTERVAL).await;
                match tokio::time::timeout(KEEP_ALIVE_TIMEOUT, ping_pong.ping(h2::Ping::opaque()))
                    .await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "keep-alive ping failed");
                        return;
                    }
                    Err(_) => {
                        tracing::info!("no answer to a keep-alive ping; dropping the connection");
                        return;
                    }
                }
            }
        };
        tokio::select! {
            result = &mut connection => {
                if let Err(error) = result {
                    tracing::debug!(%error, "backend connection ended");
                }
            }
            () = keep_alive => {}
        }
    };
    Ok((sender, Box::pin(run)))
}

impl tower::Service<Request<Body>> for Conn {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Dialling and HTTP/2's stream limit are waited for in the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        Box::pin(self.clone().send(request))
    }
}

/// An answer's body: its DATA frames (their flow-control capacity given back as they are read),
/// then its trailers, where gRPC puts the status.
struct RecvBody {
    stream: h2::RecvStream,
    data_done: bool,
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => self.data_done = true,
            }
        }
        match ready!(self.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }
}
