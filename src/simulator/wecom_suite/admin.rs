//! The `/__sim/suites` admin routes: the suite family's inspection,
//! pushes, installs and faults over HTTP, for tests that only have a URL
//! (users' own tests against `wxbroker simulate`). Bodies and answers are
//! JSON; a push's `status` is the callback's HTTP status, `null` when it
//! could not be delivered.
//!
//! | route | body or query | answer |
//! |---|---|---|
//! | `POST /__sim/suites` | a suite: `suite_id`, `suite_secret`, `token`, `aes_key`, `provider_corpid`, `provider_secret`?, `customized`?, `callback_url`?, `receive_id`?, `ticket_every_secs`? | ok |
//! | `POST /__sim/suites/ticket` | `suite_id`, `age_secs`? | `ticket`, `timestamp`, `status` |
//! | `POST /__sim/suites/url_check` | `suite_id`, `receive_id`? | `status`, `answered` |
//! | `POST /__sim/suites/install` | `suite_id` | `corpid`, `status` |
//! | `POST /__sim/suites/rename` | `suite_id`, `corpid`, `corp_name` | `status` |
//! | `POST /__sim/suites/cancel` | `suite_id`, `corpid` | `status` |
//! | `POST /__sim/suites/reset_permanent_code` | `suite_id`, `corpid` | `status` |
//! | `POST /__sim/suites/receive_id` | `suite_id`, `receive_id` | ok |
//! | `POST /__sim/suites/limits` | `ticket_lifetime_secs`?, `token_lifetime_secs`?, `daily_limit`? | ok |
//! | `POST /__sim/suites/fault` | `endpoint` and a fault as for `/__sim/fault` | ok |
//! | `GET /__sim/suites/calls` | | calls by endpoint |
//! | `GET /__sim/suites/corps?suite_id=` | | `corps` |
//! | `GET /__sim/suites/permanent_code?suite_id=&corpid=` | | `permanent_code` |
//! | `GET /__sim/suites/token_valid?token=` | | `suite`, `provider` |

use std::time::Duration;

use hyper::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::super::admin::FaultBody;
use super::super::params::{self, get};
use super::super::reply::{self, Body};
use super::super::request::SimRequest;
use super::super::Simulator;
use super::{ReceiveId, SimSuite, SUITE_ENDPOINTS};

type AdminResult = Result<Value, (StatusCode, String)>;

/// Serves `/__sim/suites{route}`.
pub(crate) async fn handle(sim: &Simulator, route: &str, request: &SimRequest) -> Response<Body> {
    match answer(sim, route, request).await {
        Ok(value) => reply::ok(&value),
        Err((status, message)) => reply::json(
            status,
            &json!({ "errcode": status.as_u16(), "errmsg": message }),
        ),
    }
}

fn done() -> AdminResult {
    Ok(json!({ "errcode": 0, "errmsg": "ok" }))
}

fn bad(message: &str) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, message.to_owned())
}

fn unknown() -> (StatusCode, String) {
    (StatusCode::NOT_FOUND, "no such suite or corp".to_owned())
}

fn body<T: DeserializeOwned>(request: &SimRequest) -> Result<T, (StatusCode, String)> {
    serde_json::from_slice(&request.body).map_err(|e| bad(&format!("bad request body: {e}")))
}

fn receive_id(name: Option<&str>) -> Result<ReceiveId, (StatusCode, String)> {
    match name {
        None => Ok(ReceiveId::SuiteId),
        Some(name) => ReceiveId::from_name(name)
            .ok_or_else(|| bad("receive_id must be suite_id or provider_corpid")),
    }
}

fn secs(secs: f64) -> Result<Duration, (StatusCode, String)> {
    Duration::try_from_secs_f64(secs).map_err(|_| bad("seconds must be a non-negative number"))
}

async fn answer(sim: &Simulator, route: &str, request: &SimRequest) -> AdminResult {
    let query = params::parse_query(&request.query);
    match (&request.method, route) {
        (&Method::POST, "") => {
            let add: AddSuite = body(request)?;
            if super::super::push_crypto::aes_key(&add.aes_key).is_none() {
                return Err(bad("aes_key must be 43 base64 characters"));
            }
            let suite_id = add.suite_id.clone();
            let receive = receive_id(add.receive_id.as_deref())?;
            let every = add.ticket_every_secs.map(secs).transpose()?;
            sim.add_suite(SimSuite {
                suite_id: add.suite_id,
                suite_secret: add.suite_secret,
                token: add.token,
                aes_key: add.aes_key,
                provider_corpid: add.provider_corpid,
                provider_secret: add.provider_secret,
                customized: add.customized,
            });
            sim.set_suite_receive_id(&suite_id, receive);
            if let Some(url) = &add.callback_url {
                sim.set_suite_callback_url(&suite_id, url);
            }
            if let Some(every) = every.filter(|e| !e.is_zero()) {
                let pusher = sim.spawn_suite_ticket_pusher(&suite_id, every);
                if let Some(suite) = sim.suites().suites.get_mut(&suite_id) {
                    suite.pusher = Some(pusher.abort_handle());
                }
            }
            done()
        }
        (&Method::POST, "/ticket") => {
            let TicketBody { suite_id, age_secs } = body(request)?;
            let age = secs(age_secs.unwrap_or(0.0))?;
            let pushed = sim
                .push_delayed_suite_ticket(&suite_id, age)
                .await
                .ok_or_else(unknown)?;
            Ok(json!({
                "ticket": pushed.ticket,
                "timestamp": pushed.timestamp,
                "status": pushed.status,
            }))
        }
        (&Method::POST, "/url_check") => {
            let UrlCheckBody {
                suite_id,
                receive_id: which,
            } = body(request)?;
            let which = receive_id(which.as_deref())?;
            match sim.check_suite_callback_url(&suite_id, which).await {
                Some((status, answered)) => Ok(json!({ "status": status, "answered": answered })),
                None => Ok(json!({ "status": null, "answered": false })),
            }
        }
        (&Method::POST, "/install") => {
            let SuiteBody { suite_id } = body(request)?;
            let installed = sim.install_corp(&suite_id).await.ok_or_else(unknown)?;
            Ok(json!({ "corpid": installed.corpid, "status": installed.status }))
        }
        (&Method::POST, "/rename") => {
            let RenameBody {
                suite_id,
                corpid,
                corp_name,
            } = body(request)?;
            if sim.permanent_code_of(&suite_id, &corpid).is_none() {
                return Err(unknown());
            }
            let status = sim.rename_corp(&suite_id, &corpid, &corp_name).await;
            Ok(json!({ "status": status }))
        }
        (&Method::POST, "/cancel") => {
            let CorpBody { suite_id, corpid } = body(request)?;
            if sim.permanent_code_of(&suite_id, &corpid).is_none() {
                return Err(unknown());
            }
            let status = sim.cancel_corp(&suite_id, &corpid).await;
            Ok(json!({ "status": status }))
        }
        (&Method::POST, "/reset_permanent_code") => {
            let CorpBody { suite_id, corpid } = body(request)?;
            let customized = sim
                .suites()
                .installs
                .get(&(suite_id.clone(), corpid.clone()))
                .map(|i| i.customized)
                .ok_or_else(unknown)?;
            if !customized {
                return Err(bad(
                    "only a customized (代开发) install has its permanent code reset",
                ));
            }
            let status = sim.reset_permanent_code(&suite_id, &corpid).await;
            Ok(json!({ "status": status }))
        }
        (&Method::POST, "/receive_id") => {
            let ReceiveBody {
                suite_id,
                receive_id: which,
            } = body(request)?;
            let which = receive_id(Some(&which))?;
            if !sim.suites().suites.contains_key(&suite_id) {
                return Err(unknown());
            }
            sim.set_suite_receive_id(&suite_id, which);
            done()
        }
        (&Method::POST, "/limits") => {
            let limits: LimitsBody = body(request)?;
            if let Some(s) = limits.ticket_lifetime_secs {
                sim.set_suite_ticket_lifetime(secs(s)?);
            }
            if let Some(s) = limits.token_lifetime_secs {
                sim.set_suite_token_lifetime(secs(s)?);
            }
            if let Some(limit) = limits.daily_limit {
                sim.set_suite_token_daily_limit(limit);
            }
            done()
        }
        (&Method::POST, "/fault") => {
            let FaultRequest { endpoint, fault } = body(request)?;
            if !sim.inject_suite_fault(&endpoint, fault.into_fault()) {
                return Err(bad(&format!(
                    "endpoint must be one of {}",
                    SUITE_ENDPOINTS.join(", ")
                )));
            }
            done()
        }
        (&Method::GET, "/calls") => {
            let calls: Map<String, Value> = SUITE_ENDPOINTS
                .into_iter()
                .map(|e| (e.to_owned(), sim.suite_calls(e).into()))
                .collect();
            Ok(Value::Object(calls))
        }
        (&Method::GET, "/corps") => {
            let suite_id =
                get(&query, "suite_id").ok_or_else(|| bad("missing suite_id parameter"))?;
            Ok(json!({ "corps": sim.installed_corps(suite_id) }))
        }
        (&Method::GET, "/permanent_code") => {
            let suite_id =
                get(&query, "suite_id").ok_or_else(|| bad("missing suite_id parameter"))?;
            let corpid = get(&query, "corpid").ok_or_else(|| bad("missing corpid parameter"))?;
            let code = sim
                .permanent_code_of(suite_id, corpid)
                .ok_or_else(unknown)?;
            Ok(json!({ "permanent_code": code }))
        }
        (&Method::GET, "/token_valid") => {
            let token = get(&query, "token").ok_or_else(|| bad("missing token parameter"))?;
            Ok(json!({
                "suite": sim.suite_token_valid(token),
                "provider": sim.provider_token_valid(token),
            }))
        }
        _ => Err((StatusCode::NOT_FOUND, "not found".to_owned())),
    }
}

#[derive(Deserialize)]
struct AddSuite {
    suite_id: String,
    suite_secret: String,
    token: String,
    aes_key: String,
    provider_corpid: String,
    provider_secret: Option<String>,
    #[serde(default)]
    customized: bool,
    callback_url: Option<String>,
    receive_id: Option<String>,
    ticket_every_secs: Option<f64>,
}

#[derive(Deserialize)]
struct TicketBody {
    suite_id: String,
    age_secs: Option<f64>,
}

#[derive(Deserialize)]
struct UrlCheckBody {
    suite_id: String,
    receive_id: Option<String>,
}

#[derive(Deserialize)]
struct SuiteBody {
    suite_id: String,
}

#[derive(Deserialize)]
struct CorpBody {
    suite_id: String,
    corpid: String,
}

#[derive(Deserialize)]
struct RenameBody {
    suite_id: String,
    corpid: String,
    corp_name: String,
}

#[derive(Deserialize)]
struct ReceiveBody {
    suite_id: String,
    receive_id: String,
}

#[derive(Deserialize)]
struct LimitsBody {
    ticket_lifetime_secs: Option<f64>,
    token_lifetime_secs: Option<f64>,
    daily_limit: Option<u32>,
}

/// `{"endpoint":"get_suite_token","kind":"errcode","errcode":40085,"count":2}`.
#[derive(Deserialize)]
struct FaultRequest {
    endpoint: String,
    #[serde(flatten)]
    fault: FaultBody,
}
