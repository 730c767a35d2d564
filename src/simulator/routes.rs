//! HTTP dispatch: reads a whole request, counts and records it against its
//! endpoint, and hands it to the token API, the ticket API, the
//! token-consuming APIs, the
//! user-facing `/sns/*` APIs, the Open Platform's `/cgi-bin/component/*`,
//! WeCom's service providers' `/cgi-bin/service/*` or the admin routes.

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Response, StatusCode};
use serde_json::json;
use tracing::debug;

use super::reply::{self, Body};
use super::request::{DropConnection, SimRequest};
use super::rids::{rid_in, RidRecord};
use super::{
    admin, media, mp_api, openapi, params, sns, tcb, ticket_api, token_api, Endpoint,
    RecordedRequest, Simulator,
};

/// Bodies larger than this are refused; WeChat's own limits are far lower.
const MAX_BODY: usize = 16 * 1024 * 1024;

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
        if let Some(route) = rest.strip_prefix("suites") {
            return Ok(super::wecom_suite::handle_admin(&sim, route, &request).await);
        }
        return Ok(admin::handle(&sim, rest, &request));
    }
    sim.lock().count_path(&request.path);
    if request.path.starts_with("/cgi-bin/component/") {
        return Ok(super::open_platform::handle(&sim, &request).await);
    }
    if request.path.starts_with("/cgi-bin/service/") {
        return super::wecom_suite::handle(&sim, &request).await;
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
    let asked = Asked {
        query: request.query.clone(),
        body: request.body.clone(),
        peer: request.peer,
    };
    let answer = match endpoint {
        _ if endpoint.issues_tokens() => token_api::handle(&sim, endpoint, request).await?,
        _ if endpoint.issues_tickets() => ticket_api::handle(&sim, endpoint, &request).await?,
        Endpoint::OAuthAccessToken
        | Endpoint::OAuthRefreshToken
        | Endpoint::SnsUserInfo
        | Endpoint::SnsAuth
        | Endpoint::JsCode2Session => sns::handle(&sim, endpoint, &request),
        Endpoint::MediaGet => media::handle(&sim, &request),
        Endpoint::UserInfo
        | Endpoint::CustomSend
        | Endpoint::GetCallbackIp
        | Endpoint::GetApiDomainIp => mp_api::handle(&sim, endpoint, &request),
        Endpoint::QuotaGet | Endpoint::ClearQuota | Endpoint::ClearQuotaV2 | Endpoint::RidGet => {
            openapi::handle(&sim, endpoint, &request)
        }
        _ => tcb::handle(&sim, endpoint, &request),
    };
    Ok(remember_rid(&sim, asked, answer).await)
}

/// What `rid/get` tells of a call, kept from its request.
struct Asked {
    query: String,
    body: Bytes,
    peer: IpAddr,
}

/// Records an error answer whose errmsg carries a rid, as WeChat does, so
/// `rid/get` can describe the call later. The answer goes out unchanged.
async fn remember_rid(sim: &Simulator, asked: Asked, answer: Response<Body>) -> Response<Body> {
    let (parts, body) = answer.into_parts();
    let Ok(collected) = body.collect().await;
    let bytes = collected.to_bytes();
    let errmsg = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .filter(|answer| answer["errcode"].as_i64().is_some_and(|code| code != 0))
        .and_then(|answer| answer["errmsg"].as_str().map(str::to_owned));
    if let Some(rid) = errmsg.as_deref().and_then(rid_in) {
        let mut state = sim.lock();
        let query = params::parse_query(&asked.query);
        let body_json = serde_json::from_slice::<serde_json::Value>(&asked.body).ok();
        let appid = params::get(&query, "access_token")
            .and_then(|token| state.tokens.owner(token))
            .or_else(|| params::get(&query, "appid"))
            .or_else(|| body_json.as_ref()?.get("appid")?.as_str())
            .map(str::to_owned);
        let record = RidRecord {
            appid,
            invoke_time: state.clock.unix_secs(),
            request_url: asked.query.clone(),
            request_body: String::from_utf8_lossy(&asked.body).into_owned(),
            response_body: String::from_utf8_lossy(&bytes).into_owned(),
            client_ip: state
                .config
                .seen_ip
                .unwrap_or(asked.peer)
                .to_canonical()
                .to_string(),
        };
        state.rids.remember(rid.to_owned(), record);
    }
    Response::from_parts(parts, Body::new(bytes))
}
