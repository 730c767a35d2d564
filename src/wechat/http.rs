//! One credential call over HTTP: the client it goes through (no
//! redirects, no `Referer`), the call sent and its answer read within a
//! timeout, and transport errors stripped of the URL, which carries a
//! secret or a token in its query.

use std::time::Duration;

use super::answer::{parse_answer, AnswerField, TokenGrant};
use super::fetch_error::FetchError;

/// Idle connections kept to each upstream host. Every app fetches at
/// start, at once, each on a connection of its own; kept, ten thousand
/// apps would hold ten thousand idle connections (some 24 KiB each) for
/// minutes, where a refresh every few seconds needs a handful.
const IDLE_CONNECTIONS_PER_HOST: usize = 16;

/// The HTTP client for credential fetches. It never follows a redirect
/// (a classic token URL carries the secret in its query and a
/// `stable_token` body carries it too: a 307 would send it on, and a 302
/// would leak it in `Referer`), and never sends a `Referer` at all.
pub fn upstream_client(
    upstream: &crate::config::UpstreamConfig,
) -> Result<reqwest::Client, crate::upstream::ClientError> {
    let builder = reqwest::Client::builder()
        .user_agent(concat!("wxbroker/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST);
    crate::upstream::build(builder, upstream)
}

/// One credential call: sent, its redirect refused, its answer parsed,
/// all within `timeout`.
pub async fn exchange(
    request: reqwest::RequestBuilder,
    field: AnswerField,
    timeout: Duration,
) -> Result<TokenGrant, FetchError> {
    let exchange = async { parse_answer(&credential_body(request).await?, field) };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(FetchError::Timeout(timeout)))
}

/// Sends a credential call and reads its whole body: a redirect is refused
/// (never followed), any other status but success is an error, and
/// transport errors never quote the URL. Not bounded in time: the caller
/// bounds the whole exchange.
pub async fn credential_body(request: reqwest::RequestBuilder) -> Result<bytes::Bytes, FetchError> {
    let response = request.send().await.map_err(transport_error)?;
    let status = response.status();
    if status.is_redirection() {
        return Err(FetchError::Redirect(status.as_u16()));
    }
    let body = response.bytes().await.map_err(transport_error)?;
    if !status.is_success() {
        return Err(FetchError::Http(status.as_u16()));
    }
    Ok(body)
}

/// reqwest errors quote the URL, and a classic token URL carries the secret
/// in its query, so the URL is stripped before the error goes anywhere.
fn transport_error(err: reqwest::Error) -> FetchError {
    FetchError::Transport(describe_without_url(err))
}

/// A reqwest error and its causes in one line, without the URL: a
/// credential call's URL carries a secret or a token in its query.
pub fn describe_without_url(err: reqwest::Error) -> String {
    crate::errors::Chain(&err.without_url()).to_string()
}
