//! What the token API and the compatible listener check of every request
//! before answering it: that no proxy and no broker relayed it, and that
//! a small JSON body arrives within its limit.

use bytes::Bytes;
use http::{HeaderMap, HeaderName};

use super::api_error::ApiError;
use super::proxy::FORWARDED_MARK;
use crate::errors::Chain;
use crate::http_io::body::{BodyError, ReadError};
use crate::http_io::RequestBody;

/// Whether a header is one of the marks [`check_not_relayed`] refuses.
pub fn is_relay_mark(name: &HeaderName) -> bool {
    *name == http::header::FORWARDED || *name == X_FORWARDED_FOR || *name == FORWARDED_MARK
}

/// Token routes, and the compatible listener's token calls, take small
/// JSON bodies only.
pub const TOKEN_BODY_LIMIT: usize = 1024 * 1024;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// A request that came through a reverse proxy may come from anywhere;
/// the token API is for local callers only (DESIGN.md section 6). One a
/// broker forwarded is a loop (an `api_base` leading back to a broker):
/// refused before it can be forwarded again.
pub fn check_not_relayed(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.contains_key(FORWARDED_MARK) {
        return Err(ApiError::ForwardingLoop);
    }
    if headers.contains_key(&X_FORWARDED_FOR) || headers.contains_key(http::header::FORWARDED) {
        return Err(ApiError::ProxiedRequestRefused);
    }
    Ok(())
}

/// The whole body, at most `limit` bytes.
pub async fn read_body(body: RequestBody, limit: usize) -> Result<Bytes, ApiError> {
    body.read(limit).await.map_err(|err| match err {
        ReadError::TooLarge { limit } => ApiError::PayloadTooLarge { limit },
        ReadError::Body(BodyError::TimedOut(_)) => ApiError::RequestTimeout,
        ReadError::Body(err) => {
            ApiError::BadRequest(format!("could not read the body: {}", Chain(&err)))
        }
    })
}
