//! What handlers take from a request: the caller's token, request id, trace and address (passed
//! on to the services as gRPC metadata), and JSON bodies, query strings and path parameters whose
//! rejections speak the API's JSON error model instead of axum's plain text.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{
        ConnectInfo, FromRequest, FromRequestParts, Request,
        path::ErrorKind,
        rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection},
    },
    http::{StatusCode, header, request::Parts},
};
use serde::de::DeserializeOwned;
use tonic::metadata::AsciiMetadataValue;

use crate::{
    client_addr,
    error::ApiError,
    limits,
    rpc::{ForwardedAddr, Outgoing},
    state::AppState,
};

/// Who is calling: the access token (from `Authorization: Bearer` or `x-access-token`), checked
/// by the services and never by the gateway, the request id, and the client's address.
#[derive(Clone, Default)]
pub struct Caller {
    token: Option<String>,
    /// A token header was present but unusable; the message says why.
    token_error: Option<&'static str>,
    request_id: Option<AsciiMetadataValue>,
    /// The request's trace (`telemetry::TraceContextLayer`), passed on as `traceparent`.
    trace: Option<telemetry::TraceContext>,
    /// `None` without a TCP peer (the router driven in-process).
    client_addr: Option<IpAddr>,
    /// `GATEWAY_FORWARDING_SECRET`, sent beside the client address.
    forwarding_secret: Option<AsciiMetadataValue>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (token, token_error) = match authn::bearer_token(&parts.headers) {
            // Never forwarded: a backend would refuse the metadata, perhaps by resetting the
            // connection every caller shares ([`crate::limits`]).
            Ok(Some(token)) if token.len() > limits::MAX_TOKEN_BYTES => {
                (None, Some("access token is too large"))
            }
            Ok(token) => (token.map(str::to_owned), None),
            Err(message) => (None, Some(message)),
        };
        let request_id = parts
            .headers
            .get(telemetry::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let trace = parts.extensions.get::<telemetry::TraceContext>().cloned();
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let client_addr = client_addr::resolve(
            peer,
            &parts.headers,
            &state.settings.trusted_proxies,
            state.settings.forwarded_header,
        );
        Ok(Self {
            token,
            token_error,
            request_id,
            trace,
            client_addr,
            forwarding_secret: state.settings.forwarding_secret.clone(),
        })
    }
}

/// The token is a credential: never printed.
impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("token_error", &self.token_error)
            .field("request_id", &self.request_id)
            .field("trace", &self.trace)
            .field("client_addr", &self.client_addr)
            .field("forwarding_secret", &self.forwarding_secret)
            .finish()
    }
}

impl Caller {
    /// The metadata to send with the caller's token. A token header that cannot be read is
    /// refused here rather than silently dropped.
    pub fn outgoing(&self) -> Result<Outgoing, ApiError> {
        if let Some(problem) = self.token_error {
            return Err(ApiError::unauthenticated(problem, true));
        }
        let authorization = match &self.token {
            Some(token) => {
                let mut value: AsciiMetadataValue =
                    format!("Bearer {token}").parse().map_err(|_| {
                        ApiError::unauthenticated("access token is not valid text", true)
                    })?;
                // Redacted in Debug output, and never put in HTTP/2's header compression table.
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(Outgoing::new(
            authorization,
            self.request_id.clone(),
            self.trace.clone(),
            self.forwarded_addr(),
        ))
    }

    /// Whether the caller sent a token header at all, usable or not.
    pub fn has_token(&self) -> bool {
        self.token.is_some() || self.token_error.is_some()
    }

    /// The metadata without a token, for calls that must not carry one (sign-in, the keys).
    pub fn public(&self) -> Outgoing {
        Outgoing::new(
            None,
            self.request_id.clone(),
            self.trace.clone(),
            self.forwarded_addr(),
        )
    }

    /// The client's address as metadata, and the forwarding secret that goes with it.
    fn forwarded_addr(&self) -> Option<ForwardedAddr> {
        // An IP address prints as ASCII digits, dots and colons, so the parse cannot fail.
        let address = self
            .client_addr
            .and_then(|ip| ip.to_string().parse().ok())?;
        Some(ForwardedAddr {
            address,
            secret: self.forwarding_secret.clone(),
        })
    }
}

/// `axum::Json` with JSON errors: malformed JSON, wrong types and missing fields are 400, a
/// missing content type 415, an oversized body 413. The body must be a JSON object, as every
/// request body in the API's description is (serde would otherwise read an array as a struct's
/// fields in order).
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(json_rejection(&JsonRejection::MissingJsonContentType(
                Default::default(),
            )));
        }
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| bytes_rejection(&rejection))?;
        object(&body)?;
        match axum::Json::<T>::from_bytes(&body) {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

/// `application/json` or any `application/*+json`, as `axum::Json` accepts.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<mime::Mime>().ok())
        .is_some_and(|mime| {
            mime.type_() == "application"
                && (mime.subtype() == "json" || mime.suffix().is_some_and(|name| name == "json"))
        })
}

/// Refuses a body whose JSON is an array: the rest (objects, and the wrong types serde names)
/// is left to the deserializer.
fn object(body: &[u8]) -> Result<(), ApiError> {
    match body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        Some(b'[') => Err(ApiError::bad_request(
            "invalid JSON body: expected a JSON object, got an array",
        )),
        _ => Ok(()),
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

/// An optional JSON body, read whatever the content type says (or without one): no body, or an
/// empty one, is `T::default()`. For the routes a browser may call with nothing to send
/// (refresh by cookie, sign-out). Anything else must be JSON, as the API's description says:
/// malformed JSON (whitespace alone included) is a 400 and an oversized body a 413.
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = match axum::body::Bytes::from_request(req, state).await {
            Ok(body) => body,
            Err(rejection) => return Err(bytes_rejection(&rejection)),
        };
        if body.is_empty() {
            return Ok(Self(T::default()));
        }
        object(&body)?;
        serde_json::from_slice(&body)
            .map(Self)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

fn bytes_rejection(rejection: &BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is too large",
        )
    } else {
        ApiError::bad_request(format!(
            "could not read the request body: {}",
            rejection.body_text()
        ))
    }
}

/// The client's `User-Agent`, for the session list: printable ASCII (anything else becomes `?`),
/// at most [`UserAgent::MAX_BYTES`], so an odd client cannot make its own sign-in fail.
pub struct UserAgent(pub String);

impl UserAgent {
    pub const MAX_BYTES: usize = 256;

    /// `None` when the client sent none.
    pub fn metadata(&self) -> Option<AsciiMetadataValue> {
        if self.0.is_empty() {
            return None;
        }
        // Printable ASCII only (made so below), which a metadata value always accepts.
        self.0.parse().ok()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for UserAgent {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let text = parts
            .headers
            .get(header::USER_AGENT)
            .map(|v| {
                v.as_bytes()
                    .iter()
                    .take(Self::MAX_BYTES)
                    .map(|&b| {
                        if (b' '..=b'~').contains(&b) {
                            b as char
                        } else {
                            '?'
                        }
                    })
                    .collect::<String>()
            })
            .unwrap_or_default();
        Ok(Self(text.trim().to_owned()))
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
            // A value that did not parse into the handler's type: axum's words name the Rust
            // type (`i64`), which callers do not know; the API's own ids ([`PersonId`],
            // [`Uuid`]) say what they take in the `Message` of their own errors.
            Err(PathRejection::FailedToDeserializePathParams(error))
                if matches!(
                    error.kind(),
                    ErrorKind::ParseError { .. }
                        | ErrorKind::ParseErrorAtIndex { .. }
                        | ErrorKind::ParseErrorAtKey { .. }
                ) =>
            {
                Err(ApiError::bad_request("invalid path parameter"))
            }
            Err(rejection @ PathRejection::FailedToDeserializePathParams(_)) => Err(
                ApiError::bad_request(format!("invalid path: {}", innermost(&rejection))),
            ),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// A user, session or service account (client) id in a path: a UUID in its hyphenated form
/// (`01a21805-1ece-7319-8309-df8c71af21df`), the one form the API documents. Anything else is a
/// 400 before a backend is asked (auth-service would also take other spellings of a UUID, which
/// the API's description does not allow).
#[derive(Debug)]
pub struct Uuid(pub String);

impl Uuid {
    fn is_hyphenated(text: &str) -> bool {
        text.len() == 36
            && text.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_hexdigit(),
            })
    }
}

impl<'de> serde::Deserialize<'de> for Uuid {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if Self::is_hyphenated(&text) {
            Ok(Self(text))
        } else {
            Err(serde::de::Error::custom(
                "an id must be a hyphenated UUID such as 01a21805-1ece-7319-8309-df8c71af21df",
            ))
        }
    }
}

/// A person id in a path: a whole number from 1 to `i64::MAX`, in decimal digits alone (as
/// openapi.json describes it). Anything else is a 400 before a backend is asked.
#[derive(Debug, Clone, Copy)]
pub struct PersonId(pub i64);

impl PersonId {
    fn parse(text: &str) -> Option<Self> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok().filter(|id| *id >= 1).map(Self)
    }
}

impl<'de> serde::Deserialize<'de> for PersonId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "a person id must be a whole number from 1 to {}",
                i64::MAX
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn person_ids_are_whole_numbers_from_1_to_i64_max() {
        assert_eq!(PersonId::parse("1").map(|id| id.0), Some(1));
        assert_eq!(
            PersonId::parse("9223372036854775807").map(|id| id.0),
            Some(i64::MAX)
        );
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            "1.0",
            "abc",
            "9223372036854775808",
            "99999999999999999999999",
        ] {
            assert!(PersonId::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn only_hyphenated_uuids_are_ids() {
        assert!(Uuid::is_hyphenated("01a21805-1ece-7319-8309-DF8C71AF21DF"));
        for bad in [
            "",
            "01a218051ece73198309df8c71af21df",
            "{01a21805-1ece-7319-8309-df8c71af21df}",
            "01a21805-1ece-7319-8309-df8c71af21dg",
            " 01a21805-1ece-7319-8309-df8c71af21d",
            "01a21805-1ece-7319-8309-df8c71af21df\n",
        ] {
            assert!(!Uuid::is_hyphenated(bad), "{bad:?}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let caller = Caller {
            token: Some("secret-token-value".into()),
            ..Caller::default()
        };
        assert!(!format!("{caller:?}").contains("secret-token-value"));
        let outgoing = caller.outgoing().expect("a usable token");
        assert!(!format!("{outgoing:?}").contains("secret-token-value"));
    }

    async fn user_agent(value: &[u8]) -> UserAgent {
        let request = axum::http::Request::builder()
            .header(header::USER_AGENT, value)
            .body(())
            .unwrap();
        let (mut parts, ()) = request.into_parts();
        let Ok(agent) = UserAgent::from_request_parts(&mut parts, &()).await;
        agent
    }

    #[tokio::test]
    async fn a_user_agent_is_cut_to_printable_ascii_that_metadata_accepts() {
        let odd = user_agent("Mozilla/5.0 (Ünïcode)\t x".as_bytes()).await;
        assert_eq!(odd.0, "Mozilla/5.0 (??n??code)? x");
        assert!(odd.metadata().is_some());
        let long = user_agent(&[b'a'; 1000]).await;
        assert_eq!(long.0.len(), UserAgent::MAX_BYTES);
        assert!(user_agent(b"   ").await.metadata().is_none());
    }
}
