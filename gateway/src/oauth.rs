//! OAuth 2.0 as the gateway reads and answers it, for the token and introspection endpoints
//! (`routes/oauth.rs`): form bodies read strictly (RFC 6749 §3.2: each parameter at most once,
//! an empty one as if absent), client authentication by HTTP Basic or by form fields (§2.3.1),
//! and every refusal in RFC 6749's JSON shape (§5.2) rather than the API's `{code, message}`.

use std::{borrow::Cow, collections::HashMap};

use axum::{
    extract::{FromRequest, Request},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::{
    Engine,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::error::{ApiError, quoted};

/// The challenge of a 401 to a client that tried HTTP Basic.
const BASIC_CHALLENGE: HeaderValue = HeaderValue::from_static("Basic realm=\"persons-api\"");

/// An OAuth 2.0 error answer: `{"error", "error_description"}` with its status.
#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    /// RFC 6749 §5.2's code (`invalid_request`, `invalid_client`, …).
    pub error: &'static str,
    pub description: String,
    /// The client tried HTTP Basic, so a 401 carries a `Basic` challenge (RFC 6749 §5.2).
    pub basic_challenge: bool,
    /// Seconds for `Retry-After` on a 429 or 503.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl OAuthError {
    pub fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            basic_challenge: false,
            retry_after: None,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub fn invalid_client(description: impl Into<String>, basic_challenge: bool) -> Self {
        Self {
            basic_challenge,
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
        }
    }

    pub fn unsupported_grant_type(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            description,
        )
    }

    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    /// A backend's refusal in OAuth terms. auth-service answers a failed client authentication
    /// UNAUTHENTICATED (401) and a scope the account does not hold INVALID_ARGUMENT
    /// "invalid_scope"; throttling (429) and unavailability (503) keep their status and delay.
    pub fn from_api(error: ApiError, basic_challenge: bool) -> Self {
        let ApiError {
            status,
            code,
            message,
            retry_after,
            ..
        } = error;
        let mapped = match status {
            StatusCode::UNAUTHORIZED => {
                Self::invalid_client("client authentication failed", basic_challenge)
            }
            StatusCode::BAD_REQUEST if message.starts_with("invalid_scope") => {
                let detail = message["invalid_scope".len()..].trim_start_matches([':', ' ']);
                Self::invalid_scope(if detail.is_empty() {
                    "the scope names a role the client does not hold"
                } else {
                    detail
                })
            }
            StatusCode::BAD_REQUEST if code == "failed_precondition" => {
                Self::new(status, "invalid_grant", message)
            }
            StatusCode::BAD_REQUEST => Self::invalid_request(message),
            StatusCode::FORBIDDEN => {
                Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", message)
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                Self::new(status, "temporarily_unavailable", message)
            }
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Self {
                status,
                ..Self::invalid_request(message)
            },
            // Anything else was unexpected; ApiError logged it and says no more than this.
            _ => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal error",
            ),
        };
        Self {
            retry_after,
            ..mapped
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        // RFC 6749 §5.2 allows printable ASCII but `"` and `\` in a description.
        let description = quoted(&self.description);
        let body = Body {
            error: self.error,
            error_description: &description,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED && self.basic_challenge {
            headers.insert(header::WWW_AUTHENTICATE, BASIC_CHALLENGE);
        }
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(self.retry_after.unwrap_or(1)),
            );
        }
        response
    }
}

/// Every answer of the token and introspection endpoints, refusals included, carries
/// credentials or says something about them: `Cache-Control: no-store` and `Pragma: no-cache`
/// (RFC 6749 §5.1, RFC 7662 §2.2).
pub async fn no_store(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// An `application/x-www-form-urlencoded` body: every name and value percent-decoded (`+` is a
/// space) into UTF-8, or the request is refused. Any other content type is a 415.
#[derive(Debug, Default)]
pub struct Form {
    fields: HashMap<String, Vec<String>>,
}

impl Form {
    pub const CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let mut fields: HashMap<String, Vec<String>> = HashMap::new();
        for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &b""[..]),
            };
            let invalid = || OAuthError::invalid_request("the form body is not UTF-8 once decoded");
            let name = form_decode(name).ok_or_else(invalid)?;
            let value = form_decode(value).ok_or_else(invalid)?;
            fields.entry(name).or_default().push(value);
        }
        Ok(Self { fields })
    }

    /// A parameter's value: an empty one counts as absent (RFC 6749 §3.1), a repeated one is
    /// refused (§3.2).
    pub fn get(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        match self.fields.get(name).map(Vec::as_slice) {
            None => Ok(None),
            Some([value]) => Ok(Some(value.as_str()).filter(|v| !v.is_empty())),
            Some(_) => Err(OAuthError::invalid_request(format!(
                "{name} is given more than once"
            ))),
        }
    }
}

/// One name or value of a form body (or of Basic credentials, RFC 6749 §2.3.1): `+` is a space,
/// `%XX` a byte, and the bytes must be UTF-8.
fn form_decode(text: &[u8]) -> Option<String> {
    let spaced: Vec<u8> = text
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_encoding::percent_decode(&spaced)
        .decode_utf8()
        .ok()
        .map(Cow::into_owned)
}

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = OAuthError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(Self::CONTENT_TYPE));
        if !is_form {
            return Err(OAuthError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
                "expected a form body with Content-Type: application/x-www-form-urlencoded",
            ));
        }
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    OAuthError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "invalid_request",
                        "request body is too large",
                    )
                } else {
                    OAuthError::invalid_request("could not read the request body")
                }
            })?;
        Self::parse(&body)
    }
}

/// How the client authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// `client_secret_basic`: the `Authorization: Basic` header.
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the body.
    Post,
}

/// A client's id and secret, as sent.
#[derive(Debug)]
pub struct ClientCredentials {
    pub id: String,
    pub secret: SecretString,
    pub method: ClientAuthMethod,
}

/// Base64 as RFC 7617 writes it, also taken without its padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl ClientCredentials {
    /// RFC 6749 §2.3.1: HTTP Basic with the id and secret each form-urlencoded before base64, or
    /// `client_id` and `client_secret` in the body; never both at once. An `Authorization`
    /// header of another scheme is not client authentication and is ignored.
    pub fn from_request(headers: &HeaderMap, form: &Form) -> Result<Self, OAuthError> {
        let form_id = form.get("client_id")?;
        let form_secret = form.get("client_secret")?;
        let (id, secret, method) = match basic(headers)? {
            Some((id, secret)) => {
                if form_secret.is_some() {
                    return Err(OAuthError::invalid_request(
                        "the client authenticated twice, by HTTP Basic and by client_secret in \
                         the body; use one",
                    ));
                }
                if form_id.is_some_and(|form_id| form_id != id) {
                    return Err(OAuthError::invalid_request(
                        "client_id in the body is not the one in HTTP Basic",
                    ));
                }
                (id, secret, ClientAuthMethod::Basic)
            }
            None => match (form_id, form_secret) {
                (Some(id), Some(secret)) => {
                    (id.to_owned(), secret.to_owned(), ClientAuthMethod::Post)
                }
                (Some(_), None) => {
                    return Err(OAuthError::invalid_client(
                        "client_secret is missing: every client authenticates with its secret",
                        false,
                    ));
                }
                (None, _) => {
                    return Err(OAuthError::invalid_client(
                        "no client authentication: send the client id and secret by HTTP Basic \
                         or as client_id and client_secret in the body",
                        false,
                    ));
                }
            },
        };
        let basic = method == ClientAuthMethod::Basic;
        if id.is_empty() {
            return Err(OAuthError::invalid_client("the client id is empty", basic));
        }
        // RFC 6749 appendix A.1 and A.2: no client has another character in its id or secret.
        if !(is_vschar(&id) && is_vschar(&secret)) {
            return Err(OAuthError::invalid_client(
                "a client id or secret is printable ASCII only",
                basic,
            ));
        }
        Ok(Self {
            id,
            secret: secret.into(),
            method,
        })
    }

    /// Whether a 401 should carry the `Basic` challenge.
    pub fn used_basic(&self) -> bool {
        self.method == ClientAuthMethod::Basic
    }

    pub fn secret(&self) -> String {
        self.secret.expose_secret().to_owned()
    }
}

/// The id and secret of an `Authorization: Basic` header; `None` without one (or with another
/// scheme). Malformed Basic credentials are a failed client authentication.
fn basic(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(OAuthError::invalid_request(
            "more than one Authorization header",
        ));
    }
    let bytes = value.as_bytes();
    let (scheme, credentials) = match bytes.iter().position(|&b| b == b' ') {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (bytes, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Ok(None);
    }
    let malformed = || {
        OAuthError::invalid_client(
            "the Basic credentials are not base64 of client_id:client_secret",
            true,
        )
    };
    let decoded = BASE64
        .decode(credentials.trim_ascii())
        .map_err(|_| malformed())?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(malformed)?;
    let id = form_decode(&decoded[..colon]).ok_or_else(malformed)?;
    let secret = form_decode(&decoded[colon + 1..]).ok_or_else(malformed)?;
    Ok(Some((id, secret)))
}

/// RFC 6749 appendix A's VSCHAR: %x20-7E.
fn is_vschar(text: &str) -> bool {
    text.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// RFC 6749 §3.3: scope tokens of %x21, %x23-5B and %x5D-7E, one space apart.
pub fn check_scope(scope: &str) -> Result<(), OAuthError> {
    let token_ok = |token: &str| {
        !token.is_empty()
            && token
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
    };
    if scope.split(' ').all(token_ok) {
        Ok(())
    } else {
        Err(OAuthError::invalid_scope(
            "scope is role names separated by single spaces",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: &str) -> Form {
        Form::parse(body.as_bytes()).expect("a valid form")
    }

    fn basic_header(raw: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        );
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn form_values_are_percent_and_plus_decoded() {
        let form = form("grant_type=client_credentials&scope=user+moderator&x=%C3%A9%2B%26");
        assert_eq!(form.get("grant_type").unwrap(), Some("client_credentials"));
        assert_eq!(form.get("scope").unwrap(), Some("user moderator"));
        assert_eq!(form.get("x").unwrap(), Some("é+&"));
        assert_eq!(form.get("absent").unwrap(), None);
    }

    #[test]
    fn an_empty_parameter_counts_as_absent() {
        let form = form("scope=&grant_type");
        assert_eq!(form.get("scope").unwrap(), None);
        assert_eq!(form.get("grant_type").unwrap(), None);
    }

    #[test]
    fn a_repeated_parameter_is_an_invalid_request() {
        let form = form("grant_type=client_credentials&scope=user&scope=moderator");
        let error = form.get("scope").unwrap_err();
        assert_eq!(error.error, "invalid_request");
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert!(error.description.contains("scope"), "{}", error.description);
        // Only the parameter read is judged: an unrelated repeat does not matter to it.
        assert_eq!(form.get("grant_type").unwrap(), Some("client_credentials"));
    }

    #[test]
    fn a_form_that_is_not_utf8_once_decoded_is_refused() {
        let error = Form::parse(b"client_id=%FF%FE").unwrap_err();
        assert_eq!(error.error, "invalid_request");
    }

    #[test]
    fn basic_credentials_are_form_decoded_after_base64() {
        // RFC 6749 §2.3.1: an id and secret with reserved characters are form-urlencoded first.
        let headers = basic_header("svc%3Aone:p%40ss+word%2B%25");
        let client = ClientCredentials::from_request(&headers, &Form::default()).unwrap();
        assert_eq!(client.id, "svc:one");
        assert_eq!(client.secret.expose_secret(), "p@ss word+%");
        assert_eq!(client.method, ClientAuthMethod::Basic);
        // Unpadded base64 is taken too, and the scheme's case does not matter.
        let mut headers = HeaderMap::new();
        let value = format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode("id1:s")
        );
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        let client = ClientCredentials::from_request(&headers, &Form::default()).unwrap();
        assert_eq!(
            (client.id.as_str(), client.secret.expose_secret()),
            ("id1", "s")
        );
    }

    #[test]
    fn malformed_basic_credentials_fail_client_authentication_with_a_challenge() {
        for raw in ["no-colon", ":secret-without-id", "id:%FF"] {
            let error =
                ClientCredentials::from_request(&basic_header(raw), &Form::default()).unwrap_err();
            assert_eq!(error.error, "invalid_client", "{raw}");
            assert!(error.basic_challenge, "{raw}");
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(
                response.headers()[header::WWW_AUTHENTICATE],
                "Basic realm=\"persons-api\""
            );
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        let error = ClientCredentials::from_request(&headers, &Form::default()).unwrap_err();
        assert_eq!(error.error, "invalid_client");
    }

    #[test]
    fn form_fields_authenticate_a_client() {
        let client = ClientCredentials::from_request(
            &HeaderMap::new(),
            &form("client_id=a&client_secret=b"),
        )
        .unwrap();
        assert_eq!(client.method, ClientAuthMethod::Post);
        assert!(!client.used_basic());
        assert_eq!(client.secret(), "b");
    }

    #[test]
    fn both_methods_at_once_are_an_invalid_request() {
        let error = ClientCredentials::from_request(
            &basic_header("a:b"),
            &form("client_id=a&client_secret=b"),
        )
        .unwrap_err();
        assert_eq!(error.error, "invalid_request");
        // The id alone beside Basic is allowed (RFC 6749 §3.2.1) when it is the same one.
        let same = ClientCredentials::from_request(&basic_header("a:b"), &form("client_id=a"));
        assert!(same.is_ok());
        let other = ClientCredentials::from_request(&basic_header("a:b"), &form("client_id=c"))
            .unwrap_err();
        assert_eq!(other.error, "invalid_request");
    }

    #[test]
    fn missing_or_unusable_credentials_are_an_invalid_client_without_a_challenge() {
        for body in [
            "",
            "client_id=a",
            "client_secret=b",
            "client_id=a%00&client_secret=b",
        ] {
            let error =
                ClientCredentials::from_request(&HeaderMap::new(), &form(body)).unwrap_err();
            assert_eq!(error.error, "invalid_client", "{body}");
            assert_eq!(error.status, StatusCode::UNAUTHORIZED);
            assert!(!error.basic_challenge, "{body}");
        }
    }

    #[test]
    fn another_authorization_scheme_is_not_client_authentication() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        let client =
            ClientCredentials::from_request(&headers, &form("client_id=a&client_secret=b"))
                .unwrap();
        assert_eq!(client.method, ClientAuthMethod::Post);
    }

    #[test]
    fn scopes_follow_rfc_6749_syntax() {
        for good in ["user", "user moderator", "a!#[]~"] {
            assert!(check_scope(good).is_ok(), "{good}");
        }
        for bad in [
            "user  moderator",
            " user",
            "user ",
            "us\"er",
            "us\\er",
            "é",
            "a\tb",
        ] {
            assert_eq!(
                check_scope(bad).unwrap_err().error,
                "invalid_scope",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn backend_refusals_map_to_rfc_6749_errors() {
        let api = |status: StatusCode, code: &'static str, message: &str| ApiError {
            retry_after: Some(7),
            ..ApiError::new(status, code, message)
        };
        let cases = [
            (
                api(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "invalid_client",
                ),
                401,
                "invalid_client",
            ),
            (
                api(StatusCode::BAD_REQUEST, "invalid_argument", "invalid_scope"),
                400,
                "invalid_scope",
            ),
            (
                api(StatusCode::BAD_REQUEST, "invalid_argument", "bad"),
                400,
                "invalid_request",
            ),
            (
                api(StatusCode::BAD_REQUEST, "failed_precondition", "no"),
                400,
                "invalid_grant",
            ),
            (
                api(StatusCode::FORBIDDEN, "permission_denied", "no"),
                400,
                "unauthorized_client",
            ),
            (
                api(StatusCode::TOO_MANY_REQUESTS, "resource_exhausted", "slow"),
                429,
                "temporarily_unavailable",
            ),
            (
                api(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "down"),
                503,
                "temporarily_unavailable",
            ),
            (ApiError::internal(), 500, "server_error"),
        ];
        for (error, status, code) in cases {
            let mapped = OAuthError::from_api(error, true);
            assert_eq!((mapped.status.as_u16(), mapped.error), (status, code));
        }
        let throttled = OAuthError::from_api(
            api(StatusCode::TOO_MANY_REQUESTS, "resource_exhausted", "slow"),
            false,
        )
        .into_response();
        assert_eq!(throttled.headers()[header::RETRY_AFTER], "7");
        let refused = OAuthError::from_api(
            api(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "invalid_client",
            ),
            false,
        )
        .into_response();
        assert!(refused.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
