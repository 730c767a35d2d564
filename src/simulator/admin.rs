//! The `/__sim/` admin routes: the in-process inspection and fault
//! injection API over HTTP, for tests that only have a URL (users' own
//! integration tests against `wxbroker simulate`).

use std::time::Duration;

use hyper::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tracing::info;

use super::params::{self, get};
use super::reply::{self, Body};
use super::request::SimRequest;
use super::{AccountKind, Endpoint, Fault, Scope, Simulator, TicketKind};

pub(crate) fn handle(sim: &Simulator, route: &str, request: &SimRequest) -> Response<Body> {
    match answer(sim, route, request) {
        Ok(value) => reply::ok(&value),
        Err((status, message)) => reply::json(
            status,
            &json!({ "errcode": status.as_u16(), "errmsg": message }),
        ),
    }
}

type AdminResult = Result<Value, (StatusCode, String)>;

fn done() -> AdminResult {
    Ok(json!({ "errcode": 0, "errmsg": "ok" }))
}

fn answer(sim: &Simulator, route: &str, request: &SimRequest) -> AdminResult {
    let query = params::parse_query(&request.query);
    match (&request.method, route) {
        (&Method::GET, "calls") => {
            let calls: Map<String, Value> = Endpoint::ALL
                .into_iter()
                .map(|e| (e.name().to_owned(), sim.calls(e).into()))
                .collect();
            Ok(Value::Object(calls))
        }
        (&Method::POST, "fault") => {
            let fault = body::<FaultBody>(request)?.into_fault();
            sim.inject(fault);
            done()
        }
        (&Method::POST, "ticket_fault") => {
            let fault = body::<FaultBody>(request)?.into_fault();
            sim.inject_ticket_fault(fault);
            done()
        }
        (&Method::POST, "clear") => {
            sim.clear_faults();
            info!("simulator faults cleared");
            done()
        }
        (&Method::POST, "latency") => {
            sim.set_latency(Duration::from_millis(body::<Millis>(request)?.ms));
            done()
        }
        (&Method::POST, "lifetime") => {
            sim.set_token_lifetime(body::<Secs>(request)?.duration()?);
            done()
        }
        (&Method::POST, "authorizer_lifetime") => {
            sim.set_authorizer_token_lifetime(body::<Secs>(request)?.duration()?);
            done()
        }
        (&Method::POST, "ticket_lifetime") => {
            sim.set_ticket_lifetime(body::<Secs>(request)?.duration()?);
            done()
        }
        (&Method::POST, "advance") => {
            sim.advance(body::<Secs>(request)?.duration()?);
            done()
        }
        (&Method::GET, "valid") => {
            let token = get(&query, "token").ok_or_else(|| bad("missing token parameter"))?;
            Ok(json!({ "valid": sim.token_valid(token), "issued": sim.token_ever_issued(token) }))
        }
        (&Method::GET, "ticket_valid") => {
            let owner = get(&query, "owner").ok_or_else(|| bad("missing owner parameter"))?;
            let kind = get(&query, "kind").ok_or_else(|| bad("missing kind parameter"))?;
            let kind = TicketKind::from_name(kind)
                .ok_or_else(|| bad("kind must be jsapi, wx_card or agent_config"))?;
            let ticket = get(&query, "ticket").ok_or_else(|| bad("missing ticket parameter"))?;
            Ok(json!({
                "valid": sim.ticket_valid(owner, kind, ticket),
                "issued": sim.ticket_ever_issued(ticket),
            }))
        }
        (&Method::POST, "wecom_agents") => {
            let agent = body::<WecomAgentBody>(request)?;
            sim.add_wecom_agent(&agent.corpid, &agent.secret, agent.agentid);
            done()
        }
        (&Method::POST, "accounts") => {
            let account = body::<AccountBody>(request)?;
            sim.add_account(&account.appid, &account.secret, account.kind.into());
            done()
        }
        (&Method::GET, "last") => {
            let name = get(&query, "endpoint").ok_or_else(|| bad("missing endpoint parameter"))?;
            let endpoint = Endpoint::from_name(name)
                .ok_or_else(|| bad(&format!("unknown endpoint {name}")))?;
            let last = sim
                .last_request(endpoint)
                .ok_or_else(|| (StatusCode::NOT_FOUND, "no request recorded".to_owned()))?;
            Ok(json!({
                "method": last.method,
                "query": last.query,
                "body": String::from_utf8_lossy(&last.body),
                "headers": last.headers,
            }))
        }
        (&Method::GET, "config") => {
            let config = sim.config();
            Ok(json!({
                "token_lifetime_secs": config.token_lifetime.as_secs_f64(),
                "classic_overlap_secs": config.classic_overlap.as_secs_f64(),
                "stable_window_secs": config.stable_window.as_secs_f64(),
                "stable_force_min_interval_secs": config.stable_force_min_interval.as_secs_f64(),
                "stable_force_daily_limit": config.stable_force_daily_limit,
                "daily_limit": config.daily_limit,
                "ip_whitelist": config.ip_whitelist.map(|ips| ips.iter().map(ToString::to_string).collect::<Vec<_>>()),
                "seen_ip": config.seen_ip.map(|ip| ip.to_string()),
                "ticket_lifetime_secs": config.ticket_lifetime.as_secs_f64(),
                "ticket_daily_limit": config.ticket_daily_limit,
                "wecom_corp_ticket_hourly_limit": config.wecom_corp_ticket_hourly_limit,
                "wecom_agent_ticket_hourly_limit": config.wecom_agent_ticket_hourly_limit,
            }))
        }
        (&Method::POST, "ip_whitelist") => {
            let IpWhitelistBody { ips } = body(request)?;
            sim.set_ip_whitelist(ips);
            done()
        }
        (&Method::POST, "seen_ip") => {
            let SeenIpBody { ip } = body(request)?;
            sim.set_seen_ip(ip);
            done()
        }
        (&Method::POST, "users") => {
            let AppBody { appid } = body(request)?;
            Ok(json!({ "openid": sim.add_user(&appid) }))
        }
        (&Method::POST, "oauth_code") => {
            let code = body::<OAuthCodeBody>(request)?;
            let scope = match code.scope.as_deref() {
                None => Scope::UserInfo,
                Some(text) => Scope::parse(text)
                    .ok_or_else(|| bad("scope must be snsapi_base or snsapi_userinfo"))?,
            };
            let openid = code.openid.unwrap_or_else(|| sim.add_user(&code.appid));
            let minted = sim.mint_oauth_code_for(&code.appid, &openid, scope);
            Ok(json!({ "code": minted, "openid": openid }))
        }
        (&Method::POST, "js_code") => {
            let code = body::<JsCodeBody>(request)?;
            let openid = code.openid.unwrap_or_else(|| sim.add_user(&code.appid));
            let minted = sim.mint_js_code_for(&code.appid, &openid);
            Ok(json!({ "js_code": minted, "openid": openid }))
        }
        (&Method::POST, "media") => {
            let media = body::<MediaBody>(request)?;
            let media_id = sim.add_media(&media.appid, media.content.as_bytes());
            Ok(json!({ "media_id": media_id }))
        }
        _ => Err((StatusCode::NOT_FOUND, "not found".to_owned())),
    }
}

#[derive(Deserialize)]
struct AppBody {
    appid: String,
}

/// `{"ips":["203.0.113.8"]}`; `null` (or no `ips`) turns the whitelist off.
#[derive(Deserialize)]
struct IpWhitelistBody {
    #[serde(default)]
    ips: Option<Vec<std::net::IpAddr>>,
}

/// `{"ip":"203.0.113.7"}`; `null` (or no `ip`): the peer's own address.
#[derive(Deserialize)]
struct SeenIpBody {
    #[serde(default)]
    ip: Option<std::net::IpAddr>,
}

/// `{"appid":..,"openid"?:..,"scope"?:..}`: a new user unless `openid` names
/// one; `snsapi_userinfo` unless `scope` says otherwise.
#[derive(Deserialize)]
struct OAuthCodeBody {
    appid: String,
    openid: Option<String>,
    scope: Option<String>,
}

#[derive(Deserialize)]
struct JsCodeBody {
    appid: String,
    openid: Option<String>,
}

#[derive(Deserialize)]
struct MediaBody {
    appid: String,
    content: String,
}

fn bad(message: &str) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, message.to_owned())
}

fn body<T: DeserializeOwned>(request: &SimRequest) -> Result<T, (StatusCode, String)> {
    serde_json::from_slice(&request.body).map_err(|e| bad(&format!("bad request body: {e}")))
}

fn one() -> u32 {
    1
}

/// `{"kind":"errcode","errcode":40164,"count":3}` and friends; `count`
/// defaults to 1.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum FaultBody {
    Errcode {
        errcode: i64,
        #[serde(default = "one")]
        count: u32,
    },
    Http500 {
        #[serde(default = "one")]
        count: u32,
    },
    Malformed {
        #[serde(default = "one")]
        count: u32,
    },
    Drop {
        #[serde(default = "one")]
        count: u32,
    },
    Delay {
        ms: u64,
        #[serde(default = "one")]
        count: u32,
    },
}

impl FaultBody {
    pub(crate) fn into_fault(self) -> Fault {
        match self {
            FaultBody::Errcode { errcode, count } => Fault::Errcode { errcode, count },
            FaultBody::Http500 { count } => Fault::Http500Html { count },
            FaultBody::Malformed { count } => Fault::MalformedJson { count },
            FaultBody::Drop { count } => Fault::DropConnection { count },
            FaultBody::Delay { ms, count } => Fault::Delay {
                delay: Duration::from_millis(ms),
                count,
            },
        }
    }
}

#[derive(Deserialize)]
struct Millis {
    ms: u64,
}

#[derive(Deserialize)]
struct Secs {
    secs: f64,
}

impl Secs {
    fn duration(&self) -> Result<Duration, (StatusCode, String)> {
        Duration::try_from_secs_f64(self.secs)
            .map_err(|_| bad("secs must be a non-negative number"))
    }
}

#[derive(Deserialize)]
struct AccountBody {
    appid: String,
    secret: String,
    kind: KindBody,
}

#[derive(Deserialize)]
struct WecomAgentBody {
    corpid: String,
    secret: String,
    agentid: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum KindBody {
    Wechat,
    Wecom,
}

impl From<KindBody> for AccountKind {
    fn from(kind: KindBody) -> Self {
        match kind {
            KindBody::Wechat => AccountKind::Wechat,
            KindBody::Wecom => AccountKind::Wecom,
        }
    }
}
