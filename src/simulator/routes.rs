//! HTTP dispatch: reads a whole request, counts and records it against its
//! endpoint, and hands it to the token API, the ticket API, the
//! token-consuming APIs, the
//! user-facing `/sns/*` APIs or the admin routes.

use std::fmt;
use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Response, StatusCode};
use serde_json::json;
use tracing::debug;

use super::reply::{self, Body};
use super::{
    admin, media, mp_api, params, sns, tcb, ticket_api, token_api, Endpoint, RecordedRequest,
    Simulator,
};

/// Bodies larger than this are refused; WeChat's own limits are far lower.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A fully read request, as the handlers see it.
pub(crate) struct SimRequest {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub peer: IpAddr,
}

/// Returned by the service to make hyper close the connection without an
/// answer (the `DropConnection` fault).
#[derive(Debug)]
pub(crate) struct DropConnection;

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by injected fault")
    }
}

impl std::error::Error for DropConnection {}

pub(crate) async fn handle(
    sim: Simulator,
    request: hyper::Request<Incoming>,
    peer: IpAddr,
) -> Result<Response<Body>, DropConnection> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            debug!(%error, "simulator could not read request body");
            return Ok(reply::json(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({ "errcode": 413, "errmsg": "request body unreadable or too large" }),
            ));
        }
    };
    let request = SimRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        peer,
    };

    if let Some(rest) = request.path.strip_prefix("/__sim/") {
        return Ok(admin::handle(&sim, rest, &request));
    }
    if request.path.starts_with("/cgi-bin/component/") {
        return Ok(super::open_platform::handle(&sim, &request).await);
    }
    let Some(endpoint) = Endpoint::from_path(&request.path) else {
        debug!(path = %request.path, "simulator route not found");
        return Ok(reply::not_found());
    };
    {
        let mut state = sim.lock();
        state.count_call(endpoint);
        state.record(
            endpoint,
            RecordedRequest {
                method: request.method.to_string(),
                query: params::without_access_token(&request.query),
                body: request.body.to_vec(),
                headers: request.headers.clone(),
            },
        );
    }
    debug!(endpoint = endpoint.name(), method = %request.method, "simulator call");
    Ok(match endpoint {
        _ if endpoint.issues_tokens() => return token_api::handle(&sim, endpoint, request).await,
        _ if endpoint.issues_tickets() => {
            return ticket_api::handle(&sim, endpoint, &request).await
        }
        Endpoint::OAuthAccessToken
        | Endpoint::OAuthRefreshToken
        | Endpoint::SnsUserInfo
        | Endpoint::SnsAuth
        | Endpoint::JsCode2Session => sns::handle(&sim, endpoint, &request),
        Endpoint::MediaGet => media::handle(&sim, &request),
        Endpoint::UserInfo | Endpoint::CustomSend | Endpoint::GetCallbackIp => {
            mp_api::handle(&sim, endpoint, &request)
        }
        _ => tcb::handle(&sim, endpoint, &request),
    })
}
