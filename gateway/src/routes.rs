//! The HTTP API: one table of routes (the same table the OpenAPI test walks), and the layers
//! every request passes through.

mod admin;
mod auth;
mod boards;
mod meta;
mod oauth;
mod persons;
mod service_accounts;
mod sessions;
mod tokens;

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::{MethodRouter, delete, get, post, put},
};
use serde::{Deserialize, Deserializer, de};
use tower::{Layer, Service, ServiceBuilder};
use tower_http::cors::{AllowCredentials, AllowOrigin, CorsLayer};

use crate::{
    body_budget::{BODY_BUDGET_BYTES, BodyBudgetLayer},
    call_layer::HttpCallLayer,
    config::Cors,
    error::ApiError,
    page,
    state::AppState,
};

/// Every route: method, path (OpenAPI's template syntax, which axum shares), handler.
pub fn table() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    vec![
        (Method::GET, "/", get(page::index)),
        (Method::GET, "/app.js", get(page::script)),
        (Method::GET, "/style.css", get(page::style)),
        (Method::POST, "/api/auth/signup", post(auth::sign_up)),
        (Method::POST, "/api/auth/signin", post(auth::sign_in)),
        (Method::POST, "/api/auth/refresh", post(tokens::refresh)),
        (Method::POST, "/api/auth/signout", post(tokens::sign_out)),
        (
            Method::POST,
            "/api/auth/introspect",
            post(tokens::introspect),
        ),
        (Method::GET, "/api/auth/me", get(auth::me)),
        (
            Method::PUT,
            "/api/auth/password",
            put(auth::change_password),
        ),
        (Method::GET, "/api/auth/sessions", get(sessions::mine)),
        (
            Method::DELETE,
            "/api/auth/sessions/{id}",
            delete(sessions::end_mine),
        ),
        (Method::GET, "/api/test/all", get(boards::all)),
        (Method::GET, "/api/test/user", get(boards::user)),
        (Method::GET, "/api/test/mod", get(boards::moderator)),
        (Method::GET, "/api/test/admin", get(boards::admin)),
        (Method::GET, "/api/persons", get(persons::list)),
        (Method::POST, "/api/persons", post(persons::create)),
        (Method::GET, "/api/persons/{id}", get(persons::show)),
        (Method::PUT, "/api/persons/{id}", put(persons::update)),
        (Method::DELETE, "/api/persons/{id}", delete(persons::remove)),
        (Method::GET, "/api/admin/users", get(admin::list_users)),
        (
            Method::PUT,
            "/api/admin/users/{id}/roles",
            put(admin::set_roles),
        ),
        (
            Method::DELETE,
            "/api/admin/users/{id}/sign-in-throttle",
            delete(admin::clear_sign_in_throttle),
        ),
        (
            Method::POST,
            "/api/admin/signing-keys/rotate",
            post(admin::rotate_signing_key),
        ),
        (
            Method::POST,
            "/api/admin/users/{id}/disable",
            post(admin::disable),
        ),
        (
            Method::POST,
            "/api/admin/users/{id}/enable",
            post(admin::enable),
        ),
        (
            Method::GET,
            "/api/admin/users/{id}/sessions",
            get(sessions::of_user),
        ),
        (
            Method::DELETE,
            "/api/admin/users/{id}/sessions",
            delete(sessions::end_all_of_user),
        ),
        (
            Method::GET,
            "/api/admin/users/{id}/sessions/{sid}",
            get(sessions::one_of_user),
        ),
        (
            Method::DELETE,
            "/api/admin/users/{id}/sessions/{sid}",
            delete(sessions::end_of_user),
        ),
        (
            Method::GET,
            "/api/admin/service-accounts",
            get(service_accounts::list),
        ),
        (
            Method::POST,
            "/api/admin/service-accounts",
            post(service_accounts::create),
        ),
        (
            Method::DELETE,
            "/api/admin/service-accounts/{clientId}",
            delete(service_accounts::remove),
        ),
        (
            Method::POST,
            "/api/admin/service-accounts/{clientId}/disable",
            post(service_accounts::disable),
        ),
        (
            Method::POST,
            "/api/admin/service-accounts/{clientId}/enable",
            post(service_accounts::enable),
        ),
        (
            Method::POST,
            "/api/admin/service-accounts/{clientId}/secret",
            post(service_accounts::rotate_secret),
        ),
        (
            Method::DELETE,
            "/api/admin/service-accounts/{clientId}/sign-in-throttle",
            delete(service_accounts::clear_sign_in_throttle),
        ),
        (
            Method::POST,
            oauth::TOKEN_PATH,
            post(oauth::token).layer(middleware::from_fn(crate::oauth::no_store)),
        ),
        (
            Method::POST,
            oauth::INTROSPECT_PATH,
            post(oauth::introspect).layer(middleware::from_fn(crate::oauth::no_store)),
        ),
        (
            Method::GET,
            "/.well-known/oauth-authorization-server",
            get(oauth::metadata),
        ),
        (Method::GET, oauth::JWKS_PATH, get(meta::jwks)),
        (Method::GET, "/healthz", get(meta::healthz)),
        (Method::GET, "/readyz", get(meta::readyz)),
        (Method::GET, "/openapi.json", get(meta::openapi)),
    ]
}

/// The whole gateway as a router, layers included, so tests need no socket.
pub fn app(state: AppState) -> Router {
    let settings = state.settings.clone();
    let mut router = Router::new();
    for (_, path, handler) in table() {
        router = router.route(path, handler);
    }
    // Every layer in one `Router::layer` call: each call wraps every route in a boxed service of
    // its own, and axum clones a route's whole chain of boxes for every request it serves.
    //
    // Outermost first: the call layer counts, logs and answers with the request id and the
    // security headers every request, those CORS answers and the deadline refuses included (and
    // sees the route's template, which axum sets before these layers run). CORS stays outside the
    // deadline, so a timed-out cross-origin request's 503 still carries its CORS headers.
    router
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(HttpCallLayer::new(settings.max_header_bytes))
                .option_layer(cors(&settings.cors, &settings.cookie_origins))
                .layer(DeadlineLayer {
                    limit: settings.request_timeout,
                })
                // Requests with a body take their share of a process-wide budget, so unfinished
                // bodies on every connection and stream cannot add up past it (503 when spent).
                // Inside the deadline, which bounds how long a share is held.
                .layer(BodyBudgetLayer::new(
                    BODY_BUDGET_BYTES,
                    settings.body_limit,
                    settings.trusted_proxies.clone(),
                    settings.forwarded_header,
                ))
                // Bodies beyond the limit are refused while being read, by our Json extractor
                // (413).
                .layer(DefaultBodyLimit::max(settings.body_limit)),
        )
}

/// The paging parameters of every list route: `?pageSize=…&pageToken=…`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Paging {
    page_size: Option<i32>,
    page_token: Option<String>,
}

impl Paging {
    /// The largest page the API documents (and the services serve).
    pub const MAX_PAGE_SIZE: i32 = 100;

    /// The services' defaults: size 0 means theirs, an empty token the first page. A size
    /// outside 0 to [`Self::MAX_PAGE_SIZE`] is refused, as the API's description says, rather
    /// than quietly served as another size.
    pub fn into_parts(self) -> Result<(i32, String), ApiError> {
        let page_size = self.page_size.unwrap_or_default();
        if !(0..=Self::MAX_PAGE_SIZE).contains(&page_size) {
            return Err(ApiError::bad_request(format!(
                "pageSize must be between 0 and {}, got {page_size}",
                Self::MAX_PAGE_SIZE
            )));
        }
        Ok((page_size, self.page_token.unwrap_or_default()))
    }
}

/// JSON has one number type, and the API's `integer` (JSON Schema's) includes `91.0`: any number
/// without a fractional part is taken, one with a fraction refused, one beyond `T` out of range.
pub fn whole_number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    whole(&serde_json::Number::deserialize(deserializer)?).map_err(de::Error::custom)
}

/// [`whole_number`] for an optional field: absent (with `#[serde(default)]`) or null is `None`.
pub fn optional_whole_number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    Option::<serde_json::Number>::deserialize(deserializer)?
        .map(|number| whole(&number))
        .transpose()
        .map_err(de::Error::custom)
}

fn whole<T: TryFrom<i64>>(number: &serde_json::Number) -> Result<T, String> {
    let out_of_range = || format!("{number} is out of range");
    let whole = match (number.as_i64(), number.as_f64()) {
        (Some(n), _) => n,
        (None, Some(f)) if f.fract() != 0.0 || f.is_nan() => {
            return Err(format!("expected a whole number, got {number}"));
        }
        // Whole and within i64's range (both bounds are powers of two), so the cast is exact.
        (None, Some(f))
            if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) =>
        {
            f as i64
        }
        _ => return Err(out_of_range()),
    };
    T::try_from(whole).map_err(|_| out_of_range())
}

/// The services mark the last page with an empty token; the API leaves the token out.
pub fn next_page(token: String) -> Option<String> {
    Some(token).filter(|t| !t.is_empty())
}

/// Bounds every request, backend retries included, and answers in the API's error model. A
/// plain tower layer rather than `axum::middleware::from_fn`, which clones and boxes the service
/// behind it for every request.
#[derive(Clone, Copy, Debug)]
struct DeadlineLayer {
    limit: Duration,
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            limit: self.limit,
            inner,
        }
    }
}

#[derive(Clone, Debug)]
struct Deadline<S> {
    limit: Duration,
    inner: S,
}

impl<S, B> Service<axum::http::Request<B>> for Deadline<S>
where
    S: Service<axum::http::Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        DeadlineFuture {
            inner: tokio::time::timeout(self.limit, self.inner.call(request)),
            limit: self.limit,
        }
    }
}

pin_project_lite::pin_project! {
    struct DeadlineFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        limit: Duration,
    }
}

impl<F, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match std::task::ready!(this.inner.poll(cx)) {
            Ok(result) => Poll::Ready(result),
            Err(_) => {
                let limit = *this.limit;
                tracing::warn!(?limit, "request timed out");
                Poll::Ready(Ok(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "timeout",
                    "the request took too long; retry shortly",
                )
                .into_response()))
            }
        }
    }
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Cross-origin pages get the API with bearer tokens; only those also in
/// `GATEWAY_COOKIE_ORIGINS` may send and receive the refresh cookie, and only on the auth routes
/// (the cookie's path). Browsers refuse credentials beside `Access-Control-Allow-Origin: *`, so a
/// cookie origin must be listed in `GATEWAY_CORS_ORIGINS` too.
fn cors(cors: &Cors, cookie_origins: &[HeaderValue]) -> Option<CorsLayer> {
    let allow = match cors {
        Cors::SameOrigin => return None,
        Cors::Any => AllowOrigin::any(),
        Cors::Origins(origins) => AllowOrigin::list(origins.iter().cloned()),
    };
    let cookie_origins = cookie_origins.to_vec();
    let credentials = AllowCredentials::predicate(move |origin, parts| {
        parts.uri.path().starts_with("/api/auth/") && cookie_origins.contains(origin)
    });
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_credentials(credentials)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-access-token"),
                telemetry::REQUEST_ID,
                telemetry::TRACEPARENT,
                telemetry::TRACESTATE,
            ])
            .expose_headers([telemetry::REQUEST_ID])
            .max_age(Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str) -> serde_json::Number {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn whole_numbers_are_taken_in_any_spelling_fractions_and_overflows_refused() {
        assert_eq!(whole::<i32>(&number("91")), Ok(91));
        assert_eq!(whole::<i32>(&number("91.0")), Ok(91));
        assert_eq!(whole::<i64>(&number("2592000.0")), Ok(2_592_000));
        assert_eq!(whole::<i64>(&number("-1")), Ok(-1));
        assert!(whole::<i32>(&number("91.5")).unwrap_err().contains("whole"));
        assert!(
            whole::<i32>(&number("3e9"))
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            whole::<i64>(&number("1e19"))
                .unwrap_err()
                .contains("out of range")
        );
        assert!(whole::<i64>(&number("18446744073709551615")).is_err());
    }
}
