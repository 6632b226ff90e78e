//! The one error model of the HTTP API: every failure becomes a status and a JSON body
//! `{"code": "...", "message": "..."}`, and gRPC codes map to HTTP statuses in one table.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tonic::Code;
use tonic_types::StatusExt;

use crate::backend::{Failure, classify};

/// gRPC code → HTTP status and the `code` string clients see. Codes not listed are unexpected:
/// they become 500 with a generic message, and the details go to the log only.
const GRPC_TO_HTTP: &[(Code, StatusCode, &str)] = &[
    (
        Code::InvalidArgument,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    ),
    (
        Code::FailedPrecondition,
        StatusCode::BAD_REQUEST,
        "failed_precondition",
    ),
    (Code::OutOfRange, StatusCode::BAD_REQUEST, "out_of_range"),
    (
        Code::Unauthenticated,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    ),
    (
        Code::PermissionDenied,
        StatusCode::FORBIDDEN,
        "permission_denied",
    ),
    (Code::NotFound, StatusCode::NOT_FOUND, "not_found"),
    (Code::AlreadyExists, StatusCode::CONFLICT, "already_exists"),
    (Code::Aborted, StatusCode::CONFLICT, "aborted"),
    (
        Code::ResourceExhausted,
        StatusCode::TOO_MANY_REQUESTS,
        "resource_exhausted",
    ),
    (
        Code::Unavailable,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    ),
];

const UNAVAILABLE_MESSAGE: &str = "the service is temporarily unavailable; retry shortly";

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Whether the request carried a token; decides the RFC 6750 `error` of a 401.
    pub token_sent: bool,
    /// Seconds for `Retry-After` on a 429 or 503, when the backend said (`google.rpc.RetryInfo`);
    /// otherwise 1.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            token_sent: false,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    pub fn unauthenticated(message: impl Into<String>, token_sent: bool) -> Self {
        Self {
            token_sent,
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_denied", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// The HTTP form of a backend's answer. Messages of expected codes were written for callers
    /// by the services; transport failures and unexpected codes keep their details in the log.
    pub fn from_status(status: &tonic::Status, token_sent: bool) -> Self {
        // The edge limits ([`crate::limits`]) should make this unreachable; should a backend's
        // limits still be lower, it is the caller's request that is too large.
        if classify(status) == Failure::Refused {
            tracing::warn!(error = %status, "backend refused the request as too large");
            return Self::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header_fields_too_large",
                "request headers are too large",
            );
        }
        // A replica that could not be reached or was lost mid-call, after every retry: whatever
        // code tonic gave it, the caller should retry later, and the details stay in our log.
        // So too a call the backend gave up on (its deadline passed, or it cancelled the call,
        // as a server does when it is stopping or its own callee went away).
        if classify(status) != Failure::Answered
            || matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled)
        {
            tracing::warn!(error = %status, "backend unavailable");
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                UNAVAILABLE_MESSAGE,
            );
        }
        let Some(&(_, http, code)) = GRPC_TO_HTTP.iter().find(|(c, ..)| *c == status.code()) else {
            tracing::error!(code = ?status.code(), message = status.message(), "unexpected backend error");
            return Self::internal();
        };
        Self {
            token_sent,
            retry_after: retry_after(status),
            ..Self::new(http, code, status.message())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            code: self.code,
            message: &self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        let challenge = match self.status {
            StatusCode::UNAUTHORIZED if self.token_sent => Some(format!(
                "Bearer realm=\"persons-api\", error=\"invalid_token\", error_description=\"{}\"",
                quoted(&self.message)
            )),
            // RFC 6750 §3.1: a request without credentials gets the challenge without an error.
            StatusCode::UNAUTHORIZED => Some("Bearer realm=\"persons-api\"".to_owned()),
            // A role the token lacks; other refusals (a foreign origin) are not about the token.
            StatusCode::FORBIDDEN if self.code == "permission_denied" => Some(format!(
                "Bearer realm=\"persons-api\", error=\"insufficient_scope\", error_description=\"{}\"",
                quoted(&self.message)
            )),
            _ => None,
        };
        if let Some(value) = challenge.and_then(|v| HeaderValue::from_str(&v).ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::TOO_MANY_REQUESTS
        {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(self.retry_after.unwrap_or(1)),
            );
        }
        response
    }
}

/// Whole seconds, rounded up, of the delay a backend asked for in `google.rpc.RetryInfo`.
fn retry_after(status: &tonic::Status) -> Option<u64> {
    let delay = status.get_details_retry_info()?.retry_delay?;
    Some((delay.as_secs() + u64::from(delay.subsec_nanos() > 0)).max(1))
}

/// RFC 6750 `error_description` (and RFC 6749's) allows printable ASCII except `"` and `\`.
pub(crate) fn quoted(text: &str) -> String {
    text.chars()
        .filter(|c| (' '..='~').contains(c) && *c != '"' && *c != '\\')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_expected_code_has_its_status() {
        let cases = [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
        ];
        for (code, http) in cases {
            let error = ApiError::from_status(&tonic::Status::new(code, "m"), false);
            assert_eq!(error.status.as_u16(), http, "{code:?}");
            assert_eq!(error.message, "m");
        }
    }

    #[test]
    fn a_deadline_or_cancellation_is_a_503_to_retry_without_its_details() {
        for code in [Code::DeadlineExceeded, Code::Cancelled] {
            let status = tonic::Status::new(code, "callee at 10.0.0.9 went away");
            let error = ApiError::from_status(&status, false);
            assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE, "{code:?}");
            assert_eq!(error.code, "unavailable");
            assert!(!error.message.contains("10.0.0.9"));
            let response = error.into_response();
            assert_eq!(response.headers()[header::RETRY_AFTER], "1", "{code:?}");
        }
    }

    #[test]
    fn unexpected_codes_hide_their_details() {
        for code in [
            Code::Internal,
            Code::Unknown,
            Code::DataLoss,
            Code::Unimplemented,
        ] {
            let error =
                ApiError::from_status(&tonic::Status::new(code, "db at 10.0.0.3 said no"), false);
            assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(error.message, "internal error");
        }
    }

    #[test]
    fn a_transport_failure_is_a_503_whatever_its_code() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by 10.0.0.7");
        let error = ApiError::from_status(&tonic::Status::from_error(Box::new(io)), false);
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!error.message.contains("10.0.0.7"));
    }

    #[test]
    fn a_backend_refusing_the_request_as_too_large_is_a_431() {
        let refusals = [
            tonic::Status::unknown("grpc-status header missing, mapped from HTTP status code 431"),
            tonic::Status::from_error(Box::new(h2::Error::from(h2::Reason::ENHANCE_YOUR_CALM))),
        ];
        for refusal in refusals {
            let error = ApiError::from_status(&refusal, true);
            assert_eq!(
                error.status,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "{refusal}"
            );
        }
    }

    #[test]
    fn a_backends_retry_info_becomes_retry_after() {
        use tonic_types::ErrorDetails;
        let throttled = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "too many failed sign-ins; retry later",
            ErrorDetails::with_retry_info(Some(std::time::Duration::from_millis(90_500))),
        );
        let response = ApiError::from_status(&throttled, false).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "91");
        let busy = tonic::Status::resource_exhausted("busy");
        let response = ApiError::from_status(&busy, false).into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        let missing = ApiError::unauthenticated("missing access token", false).into_response();
        assert_eq!(
            missing.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"persons-api\""
        );
        let invalid = ApiError::unauthenticated("bad \"sig\"", true).into_response();
        let value = invalid.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap();
        assert!(value.contains("error=\"invalid_token\""), "{value}");
        assert!(value.contains("error_description=\"bad sig\""), "{value}");
        let forbidden = ApiError::forbidden("admins only").into_response();
        let value = forbidden.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap();
        assert!(value.contains("error=\"insufficient_scope\""), "{value}");
    }
}
