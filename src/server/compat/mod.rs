//! The WeChat-compatible listener (`[server] wechat_compat_listen`): WeChat's
//! own API shape, so an unchanged SDK works once its API base URL points
//! here. The token endpoints (`/cgi-bin/token`, `/cgi-bin/stable_token`,
//! WeCom's `/cgi-bin/gettoken`) answer from the broker's cache and never
//! call WeChat; any other path goes through the shared proxy with the
//! app's current token in place of the one the client holds. An Open
//! Platform's calls are `platform`'s, a WeCom suite's `suite`'s, and every
//! other call an app's (`app`).
//!
//! No client header is required (SDKs cannot send one), so this listener
//! belongs on loopback. With uid or gid clients configured, a caller is
//! the local user owning its socket (see `tcp_peer`) and gets what its
//! entries allow, as on the Unix socket: the apps, platforms and suites
//! they name and, through the forwarded calls, the paths their `apis`
//! list. Errors are WeChat-shaped (`answer`).

mod answer;
mod app;
mod child;
mod context;
mod platform;
mod suite;

pub use context::CompatState;

use std::time::Instant;

use http::{Request, Response};
use tracing::debug;

use super::api_error::ApiError;
use super::request::check_not_relayed;
use super::respond::Body;
use crate::http_io::RequestBody;
use crate::identity::Peer;
use answer::WxError;
use context::Asked;

pub async fn handle(state: &CompatState, request: Request<RequestBody>) -> Response<Body> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let (route, response) = dispatch(state, &parts, body).await;
    let metrics = &state.api().metrics;
    let status = response.status();
    metrics
        .requests
        .series("compat", route)
        .record(status, started.elapsed().as_secs_f64());
    debug!(
        listener = "compat",
        route,
        status = status.as_u16(),
        "request"
    );
    response
}

/// The answer, and its route label: a platform's call, a suite's or a
/// corp's, else an app's.
async fn dispatch(
    state: &CompatState,
    request: &http::request::Parts,
    body: RequestBody,
) -> (&'static str, Response<Body>) {
    if let Err(err) = check_not_relayed(&request.headers) {
        let refused = match err {
            ApiError::ForwardingLoop => WxError::new(
                -1,
                "system error (wxbroker: forwarding loop: this request was already forwarded by a wxbroker; point the app's api_base or [upstream] connect_to at WeChat, not at a broker)",
            ),
            _ => WxError::new(
                40164,
                "invalid ip: requests relayed by a proxy (X-Forwarded-For or Forwarded) are refused",
            ),
        };
        return (app::route(request), refused.into_response());
    }
    // Who asks: with uid or gid clients, the local user owning the
    // connection's socket (nobody, when it could not be identified).
    let access = state
        .api()
        .clients
        .load()
        .local(request.extensions.get::<Peer>().copied());
    let asked = Asked {
        state,
        access: &access,
        request,
    };
    let body = match platform::handle(asked, body).await {
        Ok(answered) => return answered,
        Err(body) => body,
    };
    let body = match suite::handle(asked, body).await {
        Ok(answered) => return answered,
        Err(body) => body,
    };
    app::handle(asked, body).await
}
