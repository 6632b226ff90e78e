//! Person records: read by any signed-in user, created and changed by moderators and admins,
//! deleted by admins. resource-service verifies the token and enforces the roles.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use proto::person::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{
    backend::Safety::{Idempotent, Once},
    error::ApiError,
    extract::{Caller, Json, Path, PersonId, Query},
    rpc::PersonClient,
    state::AppState,
};

use super::{Paging, next_page, whole_number};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    person_id: i64,
    name: String,
    email: String,
    age: i32,
}

impl From<pb::Person> for Person {
    fn from(p: pb::Person) -> Self {
        Self {
            person_id: p.person_id,
            name: p.name,
            email: p.email,
            age: p.age,
        }
    }
}

/// `?name=…`, beside the paging parameters.
#[derive(Deserialize)]
pub struct NameFilter {
    name: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    persons: Vec<Person>,
    /// Absent on the last page.
    next_page_token: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(paging): Query<Paging>,
    Query(filter): Query<NameFilter>,
) -> Result<axum::Json<Page>, ApiError> {
    let outgoing = caller.outgoing()?;
    let (page_size, page_token) = paging.into_parts()?;
    let message = pb::ListPersonsRequest {
        page_size,
        page_token,
        name_filter: filter.name.unwrap_or_default(),
    };
    let response = state
        .resource
        .rpc(&outgoing, Idempotent, PersonClient::list_persons, message)
        .await?;
    Ok(axum::Json(Page {
        persons: response.persons.into_iter().map(Person::from).collect(),
        next_page_token: next_page(response.next_page_token),
    }))
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(PersonId(id)): Path<PersonId>,
) -> Result<axum::Json<Person>, ApiError> {
    let outgoing = caller.outgoing()?;
    let message = pb::GetPersonRequest { person_id: id };
    let person = state
        .resource
        .rpc(&outgoing, Idempotent, PersonClient::get_person, message)
        .await?;
    Ok(axum::Json(person.into()))
}

#[derive(Deserialize)]
pub struct PersonBody {
    name: String,
    email: String,
    #[serde(deserialize_with = "whole_number")]
    age: i32,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(PersonBody { name, email, age }): Json<PersonBody>,
) -> Result<impl IntoResponse, ApiError> {
    let outgoing = caller.outgoing()?;
    let message = pb::CreatePersonRequest { name, email, age };
    let person = state
        .resource
        .rpc(&outgoing, Once, PersonClient::create_person, message)
        .await?;
    let location = format!("/api/persons/{}", person.person_id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(Person::from(person)),
    ))
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(PersonId(id)): Path<PersonId>,
    Json(PersonBody { name, email, age }): Json<PersonBody>,
) -> Result<axum::Json<Person>, ApiError> {
    let outgoing = caller.outgoing()?;
    let message = pb::UpdatePersonRequest {
        person_id: id,
        name,
        email,
        age,
    };
    let person = state
        .resource
        .rpc(&outgoing, Once, PersonClient::update_person, message)
        .await?;
    Ok(axum::Json(person.into()))
}

pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(PersonId(id)): Path<PersonId>,
) -> Result<StatusCode, ApiError> {
    let outgoing = caller.outgoing()?;
    let message = pb::DeletePersonRequest { person_id: id };
    state
        .resource
        .rpc(&outgoing, Once, PersonClient::delete_person, message)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
