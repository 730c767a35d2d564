//! A child's call on the compatible listener (an Open Platform
//! authorizer's, a WeCom corp's): its current token put in, once more
//! after a rejection with the next one, and never the rejection of the
//! broker's own token handed back.

use std::future::Future;
use std::sync::Arc;

use super::answer::{audited, audited_failure, Audited, WxError};
use super::context::Asked;
use crate::children::ChildToken;
use crate::http_io::RequestBody;
use crate::server::proxy::ChildCallError;

/// Forwards the asked call below `api_base` with the child's token, which
/// `token` waits for; `invalidate` reports a rejected one and answers the
/// next. Why the child has no token (`failure`) is WeChat-shaped.
pub(super) async fn child_call<E, Token, Invalidate, Reported>(
    asked: Asked<'_>,
    api_base: &str,
    body: RequestBody,
    token: Token,
    invalidate: Invalidate,
    failure: impl Fn(E) -> WxError,
) -> Audited
where
    Token: Future<Output = Result<Arc<ChildToken>, E>>,
    Invalidate: FnOnce(String) -> Reported,
    Reported: Future<Output = Result<(Arc<ChildToken>, bool), E>>,
{
    let (api, request) = (asked.api(), asked.request);
    let forward = asked.forward();
    let prepared = api
        .proxy
        .prepare_token_call(api_base, &forward, body, "access_token")
        .await;
    let (destination, headers, body) = match prepared {
        Ok(prepared) => prepared,
        Err(err) => return audited_failure(&err),
    };
    let token = match token.await {
        Ok(token) => token,
        Err(err) => return audited(Err(failure(err))),
    };
    let call = (&request.method, &destination, &headers, &body);
    match api.proxy.send_as_child(call, &token, invalidate).await {
        Ok(response) => audited(Ok(response)),
        // The child went away, or has no token, while its rejected token
        // was reported: say so, never hand the rejection back.
        Err(ChildCallError::Invalidate(err, _)) => audited(Err(failure(err))),
        Err(ChildCallError::Proxy(err)) => audited_failure(&err),
    }
}
