//! The gRPC face of the service: who may call each RPC, and thin handlers that turn protobuf
//! messages into domain values and back.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use authn::{Access, Policy};
use proto::person::v1::{
    CreatePersonRequest, DeletePersonRequest, DeletePersonResponse, GetPersonRequest,
    ListPersonsRequest, ListPersonsResponse, Person as PbPerson, UpdatePersonRequest,
    person_service_server::{PersonService, PersonServiceServer, SERVICE_NAME},
};
use token::{Claims, Role};
use tonic::{
    Request, Response, Status,
    body::Body,
    codegen::{BoxFuture, http},
    service::Routes,
};
use tower::Service;

use crate::{
    Error,
    domain::{ListQuery, NameFilter, PageSize, PageToken, Person, PersonFields, PersonId},
    store::Store,
};

/// Who may call each RPC: the only place this is decided. `AuthnLayer` enforces it before a
/// handler runs; a method missing here is refused for everyone, and a test fails the build.
pub fn policy() -> Policy {
    const EDITORS: &[Role] = &[Role::Moderator, Role::Admin];
    Policy::new(
        SERVICE_NAME,
        &[
            ("ListPersons", Access::SignedIn),
            ("GetPerson", Access::SignedIn),
            ("CreatePerson", Access::AnyRole(EDITORS)),
            ("UpdatePerson", Access::AnyRole(EDITORS)),
            ("DeletePerson", Access::AnyRole(&[Role::Admin])),
        ],
    )
}

pub struct Persons {
    store: Store,
}

impl Persons {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl PersonService for Persons {
    async fn list_persons(
        &self,
        request: Request<ListPersonsRequest>,
    ) -> Result<Response<ListPersonsResponse>, Status> {
        let r = request.into_inner();
        let query = (|| {
            Ok::<_, Error>(ListQuery {
                after: PageToken::parse(&r.page_token)?.map(|t| t.after),
                size: PageSize::parse(r.page_size)?,
                name_filter: NameFilter::parse(&r.name_filter)?,
            })
        })()
        .map_err(status)?;
        let page = self.store.list(&query).await.map_err(status)?;
        Ok(Response::new(ListPersonsResponse {
            persons: page.persons.into_iter().map(to_proto).collect(),
            next_page_token: page.next.map(|t| t.encode()).unwrap_or_default(),
        }))
    }

    async fn get_person(
        &self,
        request: Request<GetPersonRequest>,
    ) -> Result<Response<PbPerson>, Status> {
        let id = PersonId::parse(request.into_inner().person_id).map_err(invalid)?;
        let person = self.store.get(id).await.map_err(status)?;
        Ok(Response::new(to_proto(person)))
    }

    async fn create_person(
        &self,
        request: Request<CreatePersonRequest>,
    ) -> Result<Response<PbPerson>, Status> {
        let actor = caller(&request);
        let r = request.into_inner();
        let fields = PersonFields::parse(r.name, r.email, r.age).map_err(invalid)?;
        let person = self.store.create(&fields).await.map_err(status)?;
        tracing::info!(person_id = person.id.0, actor, "person created");
        Ok(Response::new(to_proto(person)))
    }

    async fn update_person(
        &self,
        request: Request<UpdatePersonRequest>,
    ) -> Result<Response<PbPerson>, Status> {
        let actor = caller(&request);
        let r = request.into_inner();
        let id = PersonId::parse(r.person_id).map_err(invalid)?;
        let fields = PersonFields::parse(r.name, r.email, r.age).map_err(invalid)?;
        let person = self.store.update(id, &fields).await.map_err(status)?;
        tracing::info!(person_id = id.0, actor, "person updated");
        Ok(Response::new(to_proto(person)))
    }

    async fn delete_person(
        &self,
        request: Request<DeletePersonRequest>,
    ) -> Result<Response<DeletePersonResponse>, Status> {
        let actor = caller(&request);
        let id = PersonId::parse(request.into_inner().person_id).map_err(invalid)?;
        self.store.delete(id).await.map_err(status)?;
        tracing::info!(person_id = id.0, actor, "person deleted");
        Ok(Response::new(DeletePersonResponse {}))
    }
}

/// The server's router: calls to the person service go straight to it, everything else (health,
/// reflection) through tonic's general router, which would otherwise match every call's path
/// against all of them.
#[derive(Clone)]
pub struct Services {
    persons: PersonServiceServer<Persons>,
    others: Routes,
}

/// The paths of the person service's methods start with this (`/{SERVICE_NAME}/`).
const PERSONS_PREFIX: &str = "/person.v1.PersonService/";

impl Services {
    /// `others` serves every path outside the person service.
    pub fn new(persons: Persons, others: Routes) -> Self {
        Self {
            persons: PersonServiceServer::new(persons),
            others: others.prepare(),
        }
    }
}

impl Service<http::Request<Body>> for Services {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        std::task::ready!(Service::<http::Request<Body>>::poll_ready(
            &mut self.persons,
            cx
        ))?;
        Service::<http::Request<Body>>::poll_ready(&mut self.others, cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path().starts_with(PERSONS_PREFIX) {
            self.persons.call(request)
        } else {
            Box::pin(self.others.call(request))
        }
    }
}

/// The verified caller's user id, for the audit log. `AuthnLayer` inserts the claims before
/// any handler of a signed-in method runs.
fn caller<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Arc<Claims>>()
        .map_or_else(|| "-".to_owned(), |c| c.sub.clone())
}

fn to_proto(person: Person) -> PbPerson {
    PbPerson {
        person_id: person.id.0,
        name: person.fields.name.as_ref().to_owned(),
        email: person.fields.email.as_ref().to_owned(),
        age: person.fields.age.get(),
    }
}

fn invalid(e: crate::domain::Invalid) -> Status {
    status(Error::Invalid(e))
}

/// Logs what the caller must not see, then converts.
fn status(error: Error) -> Status {
    match &error {
        Error::Unexpected(cause) => tracing::error!(error.cause_chain = ?cause, "request failed"),
        Error::StoreUnavailable(cause) => {
            tracing::warn!(error.cause_chain = ?cause, "the database is unavailable");
        }
        _ => {}
    }
    error.into()
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(e) => Status::invalid_argument(e.to_string()),
            Error::PersonNotFound(id) => Status::not_found(format!("person {id} not found")),
            Error::EmailTaken => Status::already_exists("a person with this email already exists"),
            Error::StoreUnavailable(_) => {
                Status::unavailable("the database is unavailable; retry shortly")
            }
            Error::Unexpected(_) => Status::internal("internal error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn the_router_knows_the_person_service_by_its_name() {
        assert_eq!(PERSONS_PREFIX, format!("/{SERVICE_NAME}/"));
    }

    #[test]
    fn every_rpc_has_a_declared_policy_and_every_rule_names_an_rpc() {
        assert_eq!(policy().problems(SERVICE_NAME), Vec::<String>::new());
    }

    #[test]
    fn the_policy_reads_for_everyone_and_writes_for_editors() {
        let policy = policy();
        let path = |m: &str| format!("/{SERVICE_NAME}/{m}");
        assert_eq!(policy.access(&path("ListPersons")), Some(Access::SignedIn));
        assert_eq!(policy.access(&path("GetPerson")), Some(Access::SignedIn));
        assert_eq!(
            policy.access(&path("DeletePerson")),
            Some(Access::AnyRole(&[Role::Admin]))
        );
    }

    #[test]
    fn unexpected_errors_never_reach_the_caller() {
        let status = Status::from(Error::Unexpected(anyhow::anyhow!(
            "connection to db.internal:5432 refused"
        )));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn an_unreachable_database_is_unavailable_without_its_cause() {
        let status = Status::from(Error::StoreUnavailable(anyhow::anyhow!(
            "connection to db.internal:5432 refused"
        )));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.message(),
            "the database is unavailable; retry shortly"
        );
    }

    #[test]
    fn domain_errors_map_to_their_codes() {
        let code = |e: Error| Status::from(e).code();
        assert_eq!(code(Error::PersonNotFound(PersonId(1))), Code::NotFound);
        assert_eq!(code(Error::EmailTaken), Code::AlreadyExists);
        assert_eq!(
            code(Error::Invalid(crate::domain::Invalid("x".into()))),
            Code::InvalidArgument
        );
    }
}
