//! What the authn integration tests share: a stand-in auth-service that publishes the keys a
//! test holds (so tests can sign anything), and a person service that answers with the
//! caller's claims, served on port 0 behind the layer or the interceptor.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use authn::{Access, Gate, JwksSource, JwksSourceConfig, Keys, Policy};
use futures::future::BoxFuture;
use proto::{
    auth::v1::{GetJwksRequest, GetJwksResponse},
    person::v1::{
        CreatePersonRequest, DeletePersonRequest, DeletePersonResponse, GetPersonRequest,
        ListPersonsRequest, ListPersonsResponse, Person, UpdatePersonRequest,
        person_service_client::PersonServiceClient,
        person_service_server::{PersonService, PersonServiceServer},
    },
};
use token::{Audience, Claims, Ed25519Key, Issuer, Jwk, Role, SigningKey};
use tokio::net::TcpListener;
use tonic::{
    Request, Response, Status,
    body::Body,
    server::NamedService,
    transport::{Channel, Server, server::TcpIncoming},
};
use tower::Service;

/// Publishes whatever keys the test puts in it as `auth.v1.AuthService/GetJwks`, and counts
/// the fetches. Every other method is UNIMPLEMENTED.
#[derive(Clone, Default)]
pub struct KeyServer {
    keys: Arc<Mutex<Vec<Jwk>>>,
    fetches: Arc<AtomicUsize>,
}

impl KeyServer {
    pub fn publish(&self, jwk: Jwk) {
        self.keys.lock().unwrap().push(jwk);
    }

    /// Publishes no key from now on.
    pub fn withdraw_all(&self) {
        self.keys.lock().unwrap().clear();
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Serves on a random port for the rest of the test; returns its URL.
    pub async fn serve(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            Server::builder()
                .add_service(self.clone())
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        url
    }

    fn answer(&self) -> GetJwksResponse {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let keys = self
            .keys
            .lock()
            .unwrap()
            .iter()
            .map(authn::jwk_to_proto)
            .collect();
        GetJwksResponse {
            keys,
            max_age_seconds: 60,
        }
    }
}

impl NamedService for KeyServer {
    const NAME: &'static str = "auth.v1.AuthService";
}

impl Service<http::Request<Body>> for KeyServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        struct GetJwks(KeyServer);
        impl tonic::server::UnaryService<GetJwksRequest> for GetJwks {
            type Response = GetJwksResponse;
            type Future = std::future::Ready<Result<Response<GetJwksResponse>, Status>>;
            fn call(&mut self, _: Request<GetJwksRequest>) -> Self::Future {
                std::future::ready(Ok(Response::new(self.0.answer())))
            }
        }
        let server = self.clone();
        Box::pin(async move {
            if request.uri().path() != "/auth.v1.AuthService/GetJwks" {
                return Ok(Status::unimplemented("this stand-in only publishes keys").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(GetJwks(server), request).await)
        })
    }
}

/// Keys fetched from `url` as a verifier would (refreshed every minute, so within a test any
/// further fetch comes from an unknown key id).
pub async fn keys_from(url: &str) -> Keys {
    let mut config = JwksSourceConfig::new(vec![url.to_owned()], Audience::default());
    config.timeout = Duration::from_secs(2);
    JwksSource::start(config).await.unwrap()
}

pub fn issuer(key: &Ed25519Key) -> Issuer {
    Issuer::new(
        SigningKey::Ed25519(key.clone()),
        Audience::default(),
        Duration::from_secs(900),
    )
    .unwrap()
}

/// The person service's rules as resource-service declares them.
pub const EDITORS: &[Role] = &[Role::Moderator, Role::Admin];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    List,
    Get,
    Create,
    Update,
    Delete,
}

pub const ALL_RPCS: [Rpc; 5] = [Rpc::List, Rpc::Get, Rpc::Create, Rpc::Update, Rpc::Delete];

impl Rpc {
    pub fn access(self) -> Access {
        match self {
            Rpc::List | Rpc::Get => Access::SignedIn,
            Rpc::Create | Rpc::Update => Access::AnyRole(EDITORS),
            Rpc::Delete => Access::AnyRole(&[Role::Admin]),
        }
    }

    fn method(self) -> &'static str {
        match self {
            Rpc::List => "ListPersons",
            Rpc::Get => "GetPerson",
            Rpc::Create => "CreatePerson",
            Rpc::Update => "UpdatePerson",
            Rpc::Delete => "DeletePerson",
        }
    }
}

pub fn person_policy() -> Policy {
    let rules: Vec<(&str, Access)> = ALL_RPCS.iter().map(|r| (r.method(), r.access())).collect();
    Policy::new("person.v1.PersonService", &rules)
}

/// Answers every call with the verified caller it was handed: the claims' username as the
/// person's name (or INTERNAL if no claims reached it).
#[derive(Clone, Default)]
pub struct Echo;

fn caller<T>(request: &Request<T>) -> Result<Person, Status> {
    let claims = request
        .extensions()
        .get::<Arc<Claims>>()
        .ok_or_else(|| Status::internal("the handler got no claims"))?;
    Ok(Person {
        person_id: 1,
        name: claims.username.clone(),
        email: claims.sub.clone(),
        age: 1,
    })
}

#[tonic::async_trait]
impl PersonService for Echo {
    async fn list_persons(
        &self,
        request: Request<ListPersonsRequest>,
    ) -> Result<Response<ListPersonsResponse>, Status> {
        Ok(Response::new(ListPersonsResponse {
            persons: vec![caller(&request)?],
            next_page_token: String::new(),
        }))
    }
    async fn get_person(
        &self,
        request: Request<GetPersonRequest>,
    ) -> Result<Response<Person>, Status> {
        caller(&request).map(Response::new)
    }
    async fn create_person(
        &self,
        request: Request<CreatePersonRequest>,
    ) -> Result<Response<Person>, Status> {
        caller(&request).map(Response::new)
    }
    async fn update_person(
        &self,
        request: Request<UpdatePersonRequest>,
    ) -> Result<Response<Person>, Status> {
        caller(&request).map(Response::new)
    }
    async fn delete_person(
        &self,
        request: Request<DeletePersonRequest>,
    ) -> Result<Response<DeletePersonResponse>, Status> {
        caller(&request)?;
        Ok(Response::new(DeletePersonResponse {}))
    }
}

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The person service behind `AuthnLayer` with [`person_policy`], as resource-service serves.
pub async fn serve_layer(gate: &Gate) -> SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(
        Server::builder()
            .layer(gate.layer(person_policy()))
            .add_service(PersonServiceServer::new(Echo))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    addr
}

/// The person service with one interceptor for every method, all needing `access`.
pub async fn serve_interceptor(gate: &Gate, access: Access) -> SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(
        Server::builder()
            .add_service(PersonServiceServer::with_interceptor(
                Echo,
                gate.interceptor(access),
            ))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    addr
}

pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// What a call got: the caller's username, or the refusal's code and message.
pub type Answer = Result<String, (tonic::Code, String)>;

/// Calls `rpc` with `header` (name and value), if any.
pub async fn call(addr: SocketAddr, rpc: Rpc, header: Option<(&str, &str)>) -> Answer {
    fn request<T>(message: T, header: Option<(&str, &str)>) -> Request<T> {
        let mut request = Request::new(message);
        if let Some((name, value)) = header {
            let name: tonic::metadata::AsciiMetadataKey = name.parse().unwrap();
            request.metadata_mut().insert(name, value.parse().unwrap());
        }
        request
    }
    let mut client = PersonServiceClient::new(channel(addr).await);
    let person = match rpc {
        Rpc::List => client
            .list_persons(request(ListPersonsRequest::default(), header))
            .await
            .map(|r| r.into_inner().persons.remove(0)),
        Rpc::Get => client
            .get_person(request(GetPersonRequest { person_id: 1 }, header))
            .await
            .map(Response::into_inner),
        Rpc::Create => client
            .create_person(request(CreatePersonRequest::default(), header))
            .await
            .map(Response::into_inner),
        Rpc::Update => client
            .update_person(request(UpdatePersonRequest::default(), header))
            .await
            .map(Response::into_inner),
        Rpc::Delete => client
            .delete_person(request(DeletePersonRequest { person_id: 1 }, header))
            .await
            .map(|_| Person {
                name: "deleted".into(),
                ..Person::default()
            }),
    };
    person
        .map(|p| p.name)
        .map_err(|s| (s.code(), s.message().to_owned()))
}
