//! What handlers take from a request: the caller's token and request id (passed on to the
//! services as gRPC metadata), and JSON bodies, query strings and path parameters whose
//! rejections speak the API's JSON error model instead of axum's plain text.

use axum::{
    extract::{
        FromRequest, FromRequestParts, Request,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{StatusCode, request::Parts},
};
use serde::de::DeserializeOwned;
use tonic::metadata::AsciiMetadataValue;

use crate::error::ApiError;

/// Who is calling: the access token (from `Authorization: Bearer` or `x-access-token`), checked
/// by the services and never by the gateway, and the request id.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    token: Option<String>,
    /// A token header was present but unusable; the message says why.
    token_error: Option<&'static str>,
    request_id: Option<AsciiMetadataValue>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let (token, token_error) = match authn::bearer_token(&parts.headers) {
            Ok(token) => (token.map(str::to_owned), None),
            Err(message) => (None, Some(message)),
        };
        let request_id = parts
            .headers
            .get(telemetry::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(Self {
            token,
            token_error,
            request_id,
        })
    }
}

impl Caller {
    pub fn token_sent(&self) -> bool {
        self.token.is_some() || self.token_error.is_some()
    }

    /// The metadata to send with the caller's token. A token header that cannot be read is
    /// refused here rather than silently dropped.
    pub fn outgoing(&self) -> Result<Outgoing, ApiError> {
        if let Some(problem) = self.token_error {
            return Err(ApiError::unauthenticated(problem, true));
        }
        let authorization =
            match &self.token {
                Some(token) => Some(format!("Bearer {token}").parse().map_err(|_| {
                    ApiError::unauthenticated("access token is not valid text", true)
                })?),
                None => None,
            };
        Ok(Outgoing {
            authorization,
            request_id: self.request_id.clone(),
        })
    }

    /// A request with the request id only, for calls that must not carry a token (sign-in).
    pub fn public_request<T>(&self, message: T) -> tonic::Request<T> {
        Outgoing {
            authorization: None,
            request_id: self.request_id.clone(),
        }
        .request(message)
    }

    /// The HTTP form of a backend's error for this caller.
    pub fn error(&self, status: &tonic::Status) -> ApiError {
        ApiError::from_status(status, self.token_sent())
    }
}

/// The metadata every backend call of one request carries; cloned into each attempt.
#[derive(Clone, Debug)]
pub struct Outgoing {
    authorization: Option<AsciiMetadataValue>,
    request_id: Option<AsciiMetadataValue>,
}

impl Outgoing {
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        if let Some(id) = &self.request_id {
            request.metadata_mut().insert("x-request-id", id.clone());
        }
        request
    }
}

/// `axum::Json` with JSON errors: malformed JSON, wrong types and missing fields are 400, a
/// missing content type 415, an oversized body 413.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_) => {
            ApiError::bad_request(format!("invalid JSON body: {}", innermost(rejection)))
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected a JSON body with Content-Type: application/json",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is too large",
        ),
        other => ApiError::bad_request(format!(
            "could not read the request body: {}",
            other.body_text()
        )),
    }
}

/// serde's own words ("missing field `email` at line 1 column 20") without axum's prefix.
fn innermost(error: &dyn std::error::Error) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// `axum::extract::Query` with JSON errors.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection @ QueryRejection::FailedToDeserializeQueryString(_)) => Err(
                ApiError::bad_request(format!("invalid query string: {}", innermost(&rejection))),
            ),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// `axum::extract::Path` with JSON errors.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection @ PathRejection::FailedToDeserializePathParams(_)) => Err(
                ApiError::bad_request(format!("invalid path: {}", innermost(&rejection))),
            ),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}
