//! A call made with a child credential's token: an Open Platform
//! authorizer's or a WeCom corp's, one of many under one parent
//! ([`crate::children`]). The rule is the app proxy's (DESIGN.md section
//! 12): on a rejection of the token, it is reported and the call made
//! once more with the next one, so at most two upstream calls; and a
//! rejection of the broker's own token is never handed back as an answer,
//! since SDKs answer it by refetching and retrying at once, without end.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderMap;
use http::{Method, Response};

use super::{Destination, Proxy, ProxyError};
use crate::children::ChildToken;
use crate::http_io::Body;
use crate::wechat::is_token_rejected;

/// Why a child's call has no answer to give as it stands.
#[derive(Debug)]
pub enum ChildCallError<E> {
    Proxy(ProxyError),
    /// The rejected token could not be reported (the child is gone, or
    /// has no token to give): why, and the rejecting answer.
    Invalidate(E, Response<Body>),
}

/// A call ready to send (twice, if need be): its method, target, headers
/// and whole body.
pub type Prepared<'a> = (&'a Method, &'a Destination, &'a HeaderMap, &'a Bytes);

/// The query parameter a child's token goes upstream in.
const TOKEN_PARAM: &str = "access_token";

impl Proxy {
    /// Sends `call` with the child's `token`. On a rejection of it (40001,
    /// 40014, 42001), `invalidate` reports the token and answers with the
    /// one to use next: a newer one is sent once more, the same one means
    /// none can be had yet, [`ProxyError::TokenRejected`].
    pub async fn send_as_child<E, Invalidate, Reported>(
        &self,
        call: Prepared<'_>,
        token: &ChildToken,
        invalidate: Invalidate,
    ) -> Result<Response<Body>, ChildCallError<E>>
    where
        Invalidate: FnOnce(String) -> Reported,
        Reported: Future<Output = Result<(Arc<ChildToken>, bool), E>>,
    {
        let sent = self.send_judged(call, TOKEN_PARAM, token.value.expose(), is_token_rejected);
        let (response, rejection) = sent.await.map_err(ChildCallError::Proxy)?;
        let Some((errcode, errmsg)) = rejection else {
            return Ok(response);
        };
        match invalidate(token.value.expose().to_owned()).await {
            Err(err) => Err(ChildCallError::Invalidate(err, response)),
            // Nothing newer to send with (a refresh not allowed yet).
            Ok((next, _)) if next.value == token.value => {
                Err(ChildCallError::Proxy(ProxyError::TokenRejected {
                    errcode,
                    errmsg,
                    retry_after: 1,
                }))
            }
            Ok((next, _)) => self
                .send_judged(call, TOKEN_PARAM, next.value.expose(), is_token_rejected)
                .await
                .map(|(response, _)| response)
                .map_err(ChildCallError::Proxy),
        }
    }
}
