//! The refresh token as a browser keeps it: an `HttpOnly; SameSite=Strict` cookie scoped to
//! `/api/auth`, so page scripts never see it and only the auth routes receive it.
//!
//! `Secure` is set when the client reached us over TLS. The gateway itself serves plain HTTP, so
//! that is known only from a trusted proxy ([`client_addr::forwarded_https`]); behind a TLS proxy
//! that is not in `GATEWAY_TRUSTED_PROXIES`, the cookie goes out without `Secure`.
//!
//! A cookie travels with every request the browser makes to us, whoever's page asks, so spending
//! it is allowed only from an allowed `Origin`: the gateway's own (the request's `Host`) or one
//! of `GATEWAY_COOKIE_ORIGINS`. A request without `Origin` does not come from a page we know and
//! may not spend it either (browsers send `Origin` on every POST).
//!
//! A request carrying more than one `refresh_token` cookie is ambiguous: a page on a sibling
//! subdomain can set one for the parent domain (cookie tossing) that the browser sends beside
//! ours, and spending whichever comes first could sign the user into the attacker's session.
//! None of them is spent then.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header, request::Parts, uri::Authority},
};

use crate::{client_addr, error::ApiError, state::AppState};

/// The cookie's name. Not `__Host-` prefixed: that prefix requires `Path=/`, and the cookie is
/// meant for the auth routes only.
pub const NAME: &str = "refresh_token";
const PATH: &str = "/api/auth";

/// The refresh cookie of one request, and what the response may do with it.
#[derive(Default)]
pub struct RefreshCookie {
    token: Cookie,
    /// The client came over TLS (as a trusted proxy says).
    secure: bool,
    /// The request's `Origin` may spend the cookie.
    origin_allowed: bool,
}

impl FromRequestParts<AppState> for RefreshCookie {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let settings = &state.settings;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        Ok(Self {
            token: read(&parts.headers),
            secure: client_addr::forwarded_https(
                peer,
                &parts.headers,
                &settings.trusted_proxies,
                settings.forwarded_header,
            ),
            origin_allowed: origin_allowed(&parts.headers, &parts.uri, &settings.cookie_origins),
        })
    }
}

/// The request's `refresh_token` cookies.
#[derive(Default, Debug, PartialEq, Eq)]
enum Cookie {
    #[default]
    Absent,
    One(String),
    /// More than one: which is ours cannot be told, so none is spent.
    Ambiguous,
}

/// Never printed: the token is a credential.
impl std::fmt::Debug for RefreshCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshCookie")
            .field(
                "token",
                &match &self.token {
                    Cookie::Absent => "absent",
                    Cookie::One(_) => "[REDACTED]",
                    Cookie::Ambiguous => "ambiguous",
                },
            )
            .field("secure", &self.secure)
            .field("origin_allowed", &self.origin_allowed)
            .finish()
    }
}

impl RefreshCookie {
    /// The cookie's token, if the request carries one and its origin may spend it; a cookie from
    /// any other origin is a 403, and more than one cookie a 400.
    pub fn spend(&self) -> Result<Option<&str>, ApiError> {
        match &self.token {
            Cookie::Absent => Ok(None),
            _ if !self.origin_allowed => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "the refresh cookie is accepted only from the gateway's own pages",
            )),
            Cookie::Ambiguous => Err(ApiError::bad_request(
                "the request carries more than one refresh_token cookie, so none is spent; \
                 clear this site's cookies and sign in again",
            )),
            Cookie::One(token) => Ok(Some(token)),
        }
    }

    /// The cookie's token when its origin may spend it and it is the only one, and nothing
    /// otherwise.
    pub fn spendable(&self) -> Option<&str> {
        self.spend().ok().flatten()
    }

    /// Whether the answer may clear the cookie: only when the request comes from a page that
    /// may spend it, so a foreign page cannot end a session in the browser (logout CSRF).
    pub fn may_clear(&self) -> bool {
        self.origin_allowed
    }

    /// Whether the request comes from a page that may spend the cookie: such a page keeps its
    /// refresh token in the cookie only, out of its scripts' reach.
    pub fn for_cookie_page(&self) -> bool {
        self.origin_allowed
    }

    /// `Set-Cookie` carrying `token`, kept until `expires_at` (a browser-session cookie without
    /// it).
    pub fn set(
        &self,
        token: &str,
        expires_at: Option<prost_types::Timestamp>,
    ) -> Result<HeaderValue, ApiError> {
        if token.is_empty() || !token.bytes().all(is_cookie_octet) {
            tracing::error!("refresh token from auth-service is not a valid cookie value");
            return Err(ApiError::internal());
        }
        let max_age = expires_at
            .and_then(|t| SystemTime::try_from(t).ok())
            .map(|t| {
                t.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            });
        let mut value = format!("{NAME}={token}; {}", self.attributes());
        if let Some(max_age) = max_age {
            value.push_str(&format!("; Max-Age={}", max_age.as_secs()));
        }
        HeaderValue::from_str(&value).map_err(|_| ApiError::internal())
    }

    /// `Set-Cookie` that removes the cookie.
    pub fn clear(&self) -> HeaderValue {
        let value = format!("{NAME}=; {}; Max-Age=0", self.attributes());
        // Only ASCII from constants above.
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    fn attributes(&self) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("Path={PATH}; HttpOnly; SameSite=Strict{secure}")
    }
}

/// Our cookie among the request's `Cookie` headers (RFC 6265 `name=value; …`). An empty value
/// counts as none (what a cleared cookie may leave behind); more than one non-empty is
/// ambiguous.
fn read(headers: &HeaderMap) -> Cookie {
    let mut values = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|line| line.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == NAME)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty());
    match (values.next(), values.next()) {
        (None, _) => Cookie::Absent,
        (Some(value), None) => Cookie::One(value.to_owned()),
        (Some(_), Some(_)) => Cookie::Ambiguous,
    }
}

/// RFC 6265 `cookie-octet`: printable ASCII except space, `"`, `,`, `;` and `\`.
fn is_cookie_octet(byte: u8) -> bool {
    matches!(byte, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

fn origin_allowed(headers: &HeaderMap, uri: &Uri, listed: &[HeaderValue]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    if listed
        .iter()
        .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
    {
        return true;
    }
    // HTTP/1 sends `Host`; HTTP/2 the `:authority` that becomes the URI's.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(Authority::as_str));
    match (origin.to_str(), host) {
        (Ok(origin), Some(host)) => same_authority(origin, host),
        _ => false,
    }
}

/// Whether a page at `origin` (`scheme://host[:port]`) is the gateway reached as `host`. A port
/// left out means the origin scheme's default on both sides.
fn same_authority(origin: &str, host: &str) -> bool {
    let (Ok(origin), Ok(host)) = (origin.parse::<Uri>(), host.parse::<Authority>()) else {
        return false;
    };
    let default_port = match origin.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        _ => return false,
    };
    let Some(origin_host) = origin.host() else {
        return false;
    };
    origin.path() == "/"
        && origin_host.eq_ignore_ascii_case(host.host())
        && origin.port_u16().unwrap_or(default_port) == host.port_u16().unwrap_or(default_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let one = |value: &str| Cookie::One(value.to_owned());
        let map = headers(&[("cookie", "a=1; refresh_token=abc-_9; b=2")]);
        assert_eq!(read(&map), one("abc-_9"));
        let split = headers(&[("cookie", "a=1"), ("cookie", "refresh_token=xyz")]);
        assert_eq!(read(&split), one("xyz"));
        assert_eq!(
            read(&headers(&[("cookie", "refresh_tokenx=1")])),
            Cookie::Absent
        );
        assert_eq!(
            read(&headers(&[("cookie", "refresh_token=")])),
            Cookie::Absent
        );
    }

    #[test]
    fn two_cookies_are_ambiguous_and_neither_is_spent() {
        let tossed = headers(&[("cookie", "refresh_token=attacker; refresh_token=victim")]);
        assert_eq!(read(&tossed), Cookie::Ambiguous);
        let split = headers(&[
            ("cookie", "refresh_token=attacker"),
            ("cookie", "refresh_token=victim"),
        ]);
        assert_eq!(read(&split), Cookie::Ambiguous);
        let cookie = RefreshCookie {
            token: read(&tossed),
            origin_allowed: true,
            ..RefreshCookie::default()
        };
        let error = cookie.spend().unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(cookie.spendable(), None);
    }

    #[test]
    fn the_own_origin_is_the_host() {
        let uri = Uri::from_static("/api/auth/refresh");
        let allowed = |pairs: &[(&'static str, &'static str)]| {
            origin_allowed(
                &headers(pairs),
                &uri,
                &[HeaderValue::from_static("https://app.example")],
            )
        };
        assert!(allowed(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ]));
        assert!(allowed(&[
            ("origin", "https://gw.example"),
            ("host", "gw.example")
        ]));
        assert!(allowed(&[
            ("origin", "https://GW.example:443"),
            ("host", "gw.example")
        ]));
        assert!(allowed(&[
            ("origin", "https://app.example"),
            ("host", "gw.example")
        ]));
        assert!(!allowed(&[
            ("origin", "http://127.0.0.1:8081"),
            ("host", "127.0.0.1:8080")
        ]));
        assert!(!allowed(&[
            ("origin", "https://evil.example"),
            ("host", "gw.example")
        ]));
        assert!(!allowed(&[("origin", "null"), ("host", "gw.example")]));
        assert!(!allowed(&[("host", "gw.example")]));
    }

    #[test]
    fn set_cookie_carries_every_flag() {
        let plain = RefreshCookie::default();
        let value = plain.set("tok", None).unwrap();
        assert_eq!(
            value,
            "refresh_token=tok; Path=/api/auth; HttpOnly; SameSite=Strict"
        );
        let secure = RefreshCookie {
            secure: true,
            ..RefreshCookie::default()
        };
        let expires = SystemTime::now() + Duration::from_secs(3600);
        let value = secure.set("tok", Some(expires.into())).unwrap();
        let value = value.to_str().unwrap();
        assert!(value.contains("; Secure"), "{value}");
        assert!(value.contains("; Max-Age=3"), "{value}");
        assert_eq!(
            secure.clear(),
            "refresh_token=; Path=/api/auth; HttpOnly; SameSite=Strict; Secure; Max-Age=0"
        );
        assert!(plain.set("a;b", None).is_err());
    }
}
