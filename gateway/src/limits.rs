//! What a request may weigh at the gateway's edge, checked before any handler runs: the access
//! token and the headers as a whole. Only the token and the request id (checked by
//! `crate::call_layer`) are forwarded as metadata, so with these limits the gateway
//! never sends a backend more metadata than it accepts, and no client request can make a backend
//! reset the HTTP/2 connection every caller shares.

use axum::{
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};

use crate::error::ApiError;

/// The largest access token forwarded. Ours are well under 1 KB; the services accept 16 KB of
/// metadata in all, and this leaves room for the rest of it.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Whether the request's access token (from either header) is beyond [`MAX_TOKEN_BYTES`].
fn token_too_large(headers: &HeaderMap) -> bool {
    matches!(authn::bearer_token(headers), Ok(Some(token)) if token.len() > MAX_TOKEN_BYTES)
}

/// The size of a request's headers as this limit counts it: names and values.
pub(crate) fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

/// The answer to a request whose token or headers are too large, `None` for one within the
/// limits: an oversized token is refused with 401 (checked first: it is the usual reason for big
/// headers, and 401 tells the client what to fix), oversized headers with 431, in the JSON error
/// model. Checked by [`crate::call_layer::HttpCallLayer`] before any handler runs.
pub(crate) fn refusal(headers: &HeaderMap, max_header_bytes: usize) -> Option<Response> {
    if token_too_large(headers) {
        tracing::info!("refused an oversized access token");
        return Some(ApiError::unauthenticated("access token is too large", true).into_response());
    }
    let size = header_bytes(headers);
    if size > max_header_bytes {
        tracing::info!(size, limit = max_header_bytes, "refused oversized headers");
        return Some(
            ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header_fields_too_large",
                format!("request headers are too large: at most {max_header_bytes} bytes"),
            )
            .into_response(),
        );
    }
    None
}
