//! WeChat's Open Platform, simulated: component accounts, the verify
//! tickets WeChat pushes (encrypted and signed, to a callback URL, on a
//! timer and on `api_start_push_ticket`), the component endpoints
//! (`api_component_token`, `api_start_push_ticket`, `api_query_auth`,
//! `api_authorizer_token`, `api_get_authorizer_list`,
//! `api_get_authorizer_info`, `api_create_preauthcode`), authorizers created in bulk, refresh tokens
//! that rotate or not, and authorizer tokens that the token-consuming
//! APIs accept (they live in the same token book as app tokens).
//!
//! The push encryption (`push_crypto`) is the simulator's own, apart from
//! the broker's: the simulator is the broker's oracle and shares no logic
//! with it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Response;
use serde_json::{json, Value};

use super::clock::SimTime;
use super::params;
use super::push_crypto;
use super::reply::{self, Body};
use super::request::SimRequest;
use super::tokens::{Family, Holder};
use super::wx_error::WxError;
use super::Simulator;

/// One component app.
struct Component {
    secret: String,
    message_token: String,
    key: [u8; 32],
    callback_url: Option<String>,
    /// Pushed tickets, newest last; the newest two are accepted.
    tickets: Vec<String>,
    tokens: HashMap<String, SimTime>,
}

struct Authorizer {
    component: String,
    refresh_token: String,
    auth_time: u64,
}

/// The Open Platform's part of the simulator's state.
pub(crate) struct OpenPlatform {
    components: HashMap<String, Component>,
    authorizers: BTreeMap<String, Authorizer>,
    codes: HashMap<String, String>,
    calls: HashMap<&'static str, u64>,
    pub rotate_refresh_tokens: bool,
    pub component_token_lifetime: Duration,
    pub authorizer_token_lifetime: Duration,
    http: reqwest::Client,
}

impl Default for OpenPlatform {
    fn default() -> Self {
        OpenPlatform {
            components: HashMap::new(),
            authorizers: BTreeMap::new(),
            codes: HashMap::new(),
            calls: HashMap::new(),
            rotate_refresh_tokens: true,
            component_token_lifetime: Duration::from_secs(7200),
            authorizer_token_lifetime: Duration::from_secs(7200),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_default(),
        }
    }
}

fn random(len: usize) -> String {
    push_crypto::random(len)
}

/// A push, ready to send: its query string and XML body.
pub struct Push {
    pub query: String,
    pub body: String,
}

fn seal(component_appid: &str, component: &Component, inner: &str) -> Push {
    let encrypt = push_crypto::encrypt(&component.key, component_appid, inner);
    let timestamp = push_crypto::wall_secs().to_string();
    let nonce = random(10);
    let signature = push_crypto::signature(&component.message_token, &timestamp, &nonce, &encrypt);
    Push {
        query: format!(
            "timestamp={timestamp}&nonce={nonce}&encrypt_type=aes&msg_signature={signature}"
        ),
        body: format!(
            "<xml><AppId><![CDATA[{component_appid}]]></AppId><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        ),
    }
}

impl Simulator {
    fn open(&self) -> std::sync::MutexGuard<'_, OpenPlatform> {
        self.open_platform.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a component app with its secret, message token and
    /// EncodingAESKey (43 base64 characters).
    pub fn add_component(&self, appid: &str, secret: &str, message_token: &str, aes_key: &str) {
        let key = push_crypto::aes_key(aes_key).expect("a 43-character EncodingAESKey");
        self.open().components.insert(
            appid.to_owned(),
            Component {
                secret: secret.to_owned(),
                message_token: message_token.to_owned(),
                key,
                callback_url: None,
                tickets: Vec::new(),
                tokens: HashMap::new(),
            },
        );
    }

    /// Where the component's pushes go (the broker's callback route).
    pub fn set_callback_url(&self, component: &str, url: &str) {
        if let Some(c) = self.open().components.get_mut(component) {
            c.callback_url = Some(url.to_owned());
        }
    }

    /// WeChat forgets every verify ticket it pushed for `component`: a
    /// component token asked for with one is refused (61006).
    pub fn forget_verify_tickets(&self, component: &str) {
        if let Some(c) = self.open().components.get_mut(component) {
            c.tickets.clear();
        }
    }

    /// Whether refreshing an authorizer's token hands out a new refresh
    /// token (the old one then dies).
    pub fn set_refresh_token_rotation(&self, rotate: bool) {
        self.open().rotate_refresh_tokens = rotate;
    }

    /// `expires_in` of authorizer tokens issued from now on.
    pub fn set_authorizer_token_lifetime(&self, lifetime: Duration) {
        self.open().authorizer_token_lifetime = lifetime;
    }

    /// Calls made to a component endpoint (`api_authorizer_token`, ...).
    pub fn component_calls(&self, endpoint: &str) -> u64 {
        self.open().calls.get(endpoint).copied().unwrap_or(0)
    }

    /// Creates `count` authorized authorizers of `component`, each with a
    /// refresh token; returns their appids.
    pub fn add_authorizers(&self, component: &str, count: usize) -> Vec<String> {
        let mut open = self.open();
        let start = open.authorizers.len();
        (0..count)
            .map(|i| {
                let appid = format!("wxauth{:010}", start + i);
                open.authorizers.insert(
                    appid.clone(),
                    Authorizer {
                        component: component.to_owned(),
                        refresh_token: format!("refreshtoken@@@{}", random(40)),
                        auth_time: 1_700_000_000,
                    },
                );
                appid
            })
            .collect()
    }

    /// Issues `authorizer` an access token as `api_authorizer_token`
    /// would, without turning its refresh token (for benchmarks that
    /// store valid tokens for the broker to serve); `None` for an
    /// unknown authorizer. Not counted as a call.
    pub fn issue_authorizer_token(&self, authorizer: &str) -> Option<String> {
        let lifetime = {
            let open = self.open();
            open.authorizers.get(authorizer)?;
            open.authorizer_token_lifetime
        };
        Some(issue_authorizer_token(self, authorizer, lifetime))
    }

    /// The authorizer's current refresh token, as WeChat holds it.
    pub fn refresh_token_of(&self, authorizer: &str) -> Option<String> {
        self.open()
            .authorizers
            .get(authorizer)
            .map(|a| a.refresh_token.clone())
    }

    /// A sealed push of `inner` (the event XML) for `component`, for tests
    /// that tamper with it before sending.
    pub fn seal_push(&self, component: &str, inner: &str) -> Option<Push> {
        let open = self.open();
        let c = open.components.get(component)?;
        Some(seal(component, c, inner))
    }

    /// Pushes a new verify ticket to the callback URL now; returns the
    /// HTTP status the callback answered.
    pub async fn push_verify_ticket(&self, component: &str) -> Option<u16> {
        let ticket = format!("ticket@@@{}", random(64));
        let inner = format!(
            "<xml><AppId><![CDATA[{component}]]></AppId><CreateTime>{}</CreateTime><InfoType><![CDATA[component_verify_ticket]]></InfoType><ComponentVerifyTicket><![CDATA[{ticket}]]></ComponentVerifyTicket></xml>",
            self.lock().clock.unix_secs()
        );
        {
            let mut open = self.open();
            let c = open.components.get_mut(component)?;
            c.tickets.push(ticket);
            let keep = c.tickets.len().saturating_sub(2);
            c.tickets.drain(..keep);
        }
        self.send_push(component, &inner).await
    }

    /// Authorizes a new authorizer of `component` and pushes `authorized`
    /// with its code; returns the authorizer's appid.
    pub async fn authorize_new(&self, component: &str) -> (String, Option<u16>) {
        let appid = self.add_authorizers(component, 1).remove(0);
        let code = format!("queryauthcode@@@{}", random(32));
        self.open().codes.insert(code.clone(), appid.clone());
        let inner = format!(
            "<xml><AppId><![CDATA[{component}]]></AppId><CreateTime>1</CreateTime><InfoType><![CDATA[authorized]]></InfoType><AuthorizerAppid><![CDATA[{appid}]]></AuthorizerAppid><AuthorizationCode><![CDATA[{code}]]></AuthorizationCode><AuthorizationCodeExpiredTime>1</AuthorizationCodeExpiredTime></xml>"
        );
        let status = self.send_push(component, &inner).await;
        (appid, status)
    }

    /// The merchant cancels: the authorizer's refresh token and tokens
    /// die, and `unauthorized` is pushed.
    pub async fn unauthorize(&self, component: &str, authorizer: &str) -> Option<u16> {
        self.open().authorizers.remove(authorizer);
        let inner = format!(
            "<xml><AppId><![CDATA[{component}]]></AppId><CreateTime>1</CreateTime><InfoType><![CDATA[unauthorized]]></InfoType><AuthorizerAppid><![CDATA[{authorizer}]]></AuthorizerAppid></xml>"
        );
        self.send_push(component, &inner).await
    }

    async fn send_push(&self, component: &str, inner: &str) -> Option<u16> {
        let (url, push, http) = {
            let open = self.open();
            let c = open.components.get(component)?;
            (
                c.callback_url.clone()?,
                seal(component, c, inner),
                open.http.clone(),
            )
        };
        let response = http
            .post(format!("{url}?{}", push.query))
            .body(push.body)
            .send()
            .await
            .ok()?;
        Some(response.status().as_u16())
    }

    /// Pushes a verify ticket every `every` until the returned handle is
    /// aborted, as WeChat does every 10 minutes.
    pub fn spawn_ticket_pusher(
        &self,
        component: &str,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let sim = self.clone();
        let component = component.to_owned();
        tokio::spawn(async move {
            loop {
                sim.push_verify_ticket(&component).await;
                tokio::time::sleep(every).await;
            }
        })
    }
}

/// Serves `/cgi-bin/component/*`.
pub(crate) async fn handle(sim: &Simulator, request: &SimRequest) -> Response<Body> {
    let name = request
        .path
        .strip_prefix("/cgi-bin/component/")
        .unwrap_or_default();
    let endpoint: &'static str = match name {
        "api_component_token" => "api_component_token",
        "api_start_push_ticket" => "api_start_push_ticket",
        "api_query_auth" => "api_query_auth",
        "api_authorizer_token" => "api_authorizer_token",
        "api_get_authorizer_list" => "api_get_authorizer_list",
        "api_get_authorizer_info" => "api_get_authorizer_info",
        "api_create_preauthcode" => "api_create_preauthcode",
        _ => return reply::not_found(),
    };
    *sim.open().calls.entry(endpoint).or_default() += 1;
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let text = |key: &str| {
        body.get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let query = params::parse_query(&request.query);
    let component_token = params::get(&query, "component_access_token")
        .unwrap_or("")
        .to_owned();
    let component = text("component_appid");
    if endpoint == "api_start_push_ticket" {
        let known = sim
            .open()
            .components
            .get(&component)
            .is_some_and(|c| c.secret == text("component_secret"));
        if !known {
            return reply::wx_error(&WxError::wechat(40013, "invalid appid or secret"));
        }
        let pusher = sim.clone();
        tokio::spawn(async move {
            pusher.push_verify_ticket(&component).await;
        });
        return reply::ok(&json!({ "errcode": 0, "errmsg": "ok" }));
    }
    let answer = match endpoint {
        "api_component_token" => component_token_answer(
            sim,
            &component,
            &text("component_appsecret"),
            &text("component_verify_ticket"),
        ),
        _ => match check_component_token(sim, &component, &component_token) {
            Err(err) => Err(err),
            Ok(()) => match endpoint {
                "api_query_auth" => query_auth(sim, &component, &text("authorization_code")),
                "api_authorizer_token" => authorizer_token(
                    sim,
                    &component,
                    &text("authorizer_appid"),
                    &text("authorizer_refresh_token"),
                ),
                "api_get_authorizer_list" => authorizer_list(
                    sim,
                    &component,
                    body.get("offset").and_then(Value::as_u64).unwrap_or(0),
                    body.get("count").and_then(Value::as_u64).unwrap_or(0),
                ),
                "api_get_authorizer_info" => {
                    authorizer_info(sim, &component, &text("authorizer_appid"))
                }
                _ => Ok(
                    json!({ "pre_auth_code": format!("preauthcode@@@{}", random(40)), "expires_in": 1800 }),
                ),
            },
        },
    };
    match answer {
        Ok(value) => reply::ok(&value),
        Err(err) => reply::wx_error(&err),
    }
}

fn component_token_answer(
    sim: &Simulator,
    component: &str,
    secret: &str,
    ticket: &str,
) -> Result<Value, WxError> {
    let now = sim.lock().clock.now();
    let mut open = sim.open();
    let lifetime = open.component_token_lifetime;
    let c = open
        .components
        .get_mut(component)
        .filter(|c| c.secret == secret)
        .ok_or_else(|| WxError::wechat(40013, "invalid appid or secret"))?;
    if ticket.is_empty() || !c.tickets.iter().any(|t| t == ticket) {
        return Err(WxError::wechat(61006, "component ticket is invalid"));
    }
    let token = format!("componenttoken_{}", random(100));
    c.tokens.insert(token.clone(), now + lifetime);
    Ok(json!({ "component_access_token": token, "expires_in": lifetime.as_secs() }))
}

fn check_component_token(sim: &Simulator, component: &str, token: &str) -> Result<(), WxError> {
    let now = sim.lock().clock.now();
    let open = sim.open();
    match open
        .components
        .get(component)
        .and_then(|c| c.tokens.get(token))
    {
        Some(expires) if now < *expires => Ok(()),
        Some(_) => Err(WxError::wechat(42001, "component access token expired")),
        None => Err(WxError::wechat(
            40001,
            "invalid credential, access_token is invalid or not latest",
        )),
    }
}

/// Issues an authorizer token in the shared token book, as a classic
/// token of the authorizer's appid: the previous one stays valid for the
/// overlap, so the token-consuming APIs judge it like any app token.
fn issue_authorizer_token(sim: &Simulator, appid: &str, lifetime: Duration) -> String {
    let mut state = sim.lock();
    let now = state.clock.now();
    let overlap = state.config.classic_overlap;
    let holder = Holder::app(appid);
    let (current, previous) = state.tokens.lineage(&holder, Family::Classic);
    if let Some(previous) = previous {
        state.tokens.cap(&previous, now);
    }
    if let Some(current) = current {
        state.tokens.cap(&current, now + overlap);
    }
    state.tokens.issue(&holder, Family::Classic, now, lifetime)
}

fn query_auth(sim: &Simulator, component: &str, code: &str) -> Result<Value, WxError> {
    let (appid, refresh, lifetime) = {
        let mut open = sim.open();
        let appid = open
            .codes
            .remove(code)
            .ok_or_else(|| WxError::wechat(61010, "code is expired or invalid"))?;
        let lifetime = open.authorizer_token_lifetime;
        let authorizer = open
            .authorizers
            .get(&appid)
            .filter(|a| a.component == component)
            .ok_or_else(|| WxError::wechat(61003, "component is not authorized by this account"))?;
        (appid, authorizer.refresh_token.clone(), lifetime)
    };
    let token = issue_authorizer_token(sim, &appid, lifetime);
    Ok(json!({ "authorization_info": {
        "authorizer_appid": appid,
        "authorizer_access_token": token,
        "expires_in": lifetime.as_secs(),
        "authorizer_refresh_token": refresh,
        "func_info": [],
    }}))
}

fn authorizer_token(
    sim: &Simulator,
    component: &str,
    appid: &str,
    refresh_token: &str,
) -> Result<Value, WxError> {
    let (refresh, lifetime) = {
        let mut open = sim.open();
        let rotate = open.rotate_refresh_tokens;
        let lifetime = open.authorizer_token_lifetime;
        let authorizer = open
            .authorizers
            .get_mut(appid)
            .filter(|a| a.component == component)
            .ok_or_else(|| WxError::wechat(61003, "component is not authorized by this account"))?;
        if authorizer.refresh_token != refresh_token {
            return Err(WxError::wechat(61023, "refresh_token is invalid"));
        }
        if rotate {
            authorizer.refresh_token = format!("refreshtoken@@@{}", random(40));
        }
        (authorizer.refresh_token.clone(), lifetime)
    };
    let token = issue_authorizer_token(sim, appid, lifetime);
    Ok(json!({
        "authorizer_access_token": token,
        "expires_in": lifetime.as_secs(),
        "authorizer_refresh_token": refresh,
    }))
}

fn authorizer_list(
    sim: &Simulator,
    component: &str,
    offset: u64,
    count: u64,
) -> Result<Value, WxError> {
    if count == 0 || count > 500 {
        return Err(WxError::wechat(61009, "count must be 1 to 500"));
    }
    let open = sim.open();
    let mine: Vec<(&String, &Authorizer)> = open
        .authorizers
        .iter()
        .filter(|(_, a)| a.component == component)
        .collect();
    let list: Vec<Value> = mine
        .iter()
        .skip(offset as usize)
        .take(count as usize)
        .map(|(appid, a)| json!({ "authorizer_appid": appid, "refresh_token": a.refresh_token, "auth_time": a.auth_time }))
        .collect();
    Ok(json!({ "total_count": mine.len(), "list": list }))
}

/// An authorizer's profile and its authorization, refresh token
/// included, as WeChat answers `api_get_authorizer_info`.
fn authorizer_info(sim: &Simulator, component: &str, appid: &str) -> Result<Value, WxError> {
    let open = sim.open();
    let authorizer = open
        .authorizers
        .get(appid)
        .filter(|a| a.component == component)
        .ok_or_else(|| WxError::wechat(61003, "component is not authorized by this account"))?;
    let short: String = appid.chars().rev().take(6).collect();
    Ok(json!({
        "authorizer_info": {
            "nick_name": format!("authorizer {appid}"),
            "head_img": "http://wx.qlogo.cn/mmopen/simulated/0",
            "service_type_info": { "id": 2 },
            "verify_type_info": { "id": 0 },
            "user_name": format!("gh_{short}"),
            "principal_name": "simulated company",
            "alias": "",
            "qrcode_url": "http://mmbiz.qpic.cn/mmbiz/simulated/0",
        },
        "authorization_info": {
            "authorizer_appid": appid,
            "authorizer_refresh_token": authorizer.refresh_token,
            "func_info": [
                { "funcscope_category": { "id": 1 } },
                { "funcscope_category": { "id": 15 } },
            ],
        },
    }))
}

/// The handle the simulator keeps.
pub(crate) type Shared = Arc<Mutex<OpenPlatform>>;
