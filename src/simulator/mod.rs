//! The fake WeChat API: an in-process, HTTP-speaking model of WeChat's token
//! endpoints (`/cgi-bin/token`, `/cgi-bin/stable_token`, WeCom's
//! `/cgi-bin/gettoken`), the JS-SDK ticket endpoints
//! (`/cgi-bin/ticket/getticket`, WeCom's `/cgi-bin/get_jsapi_ticket` and
//! `/cgi-bin/ticket/get`), a handful of token-consuming APIs (`/tcb/*`,
//! `user/info`, `message/custom/send`, `getcallbackip`, `get_api_domain_ip`,
//! `media/get`), the
//! operator's diagnostics (`openapi/quota/get` from the real counters,
//! `clear_quota` and `clear_quota/v2` with their monthly limit, and
//! `openapi/rid/get` for the rid of every error answer given), the user-facing `/sns/*` APIs (web OAuth with USER tokens,
//! the Mini Program's `jscode2session`), WeChat's Open Platform and WeCom's
//! service providers (suites, their encrypted pushes, installs and
//! `/cgi-bin/service/*`), fault injection and inspection. It is the test oracle for
//! the broker, so it follows WeChat's rules, not the broker's wishes; the
//! `demo` and `simulate` commands serve it too.
//!
//! This file owns the public face: [`SimConfig`], [`Simulator`] (a cheap
//! `Clone` handle on shared state) and [`SimHandle`] (a running server).
//! The rules live in `state.rs`, the HTTP side in `routes.rs` and friends.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use wxbroker::simulator::{AccountKind, Endpoint, Fault, SimConfig, Simulator};
//!
//! let sim = Simulator::new(SimConfig::default());
//! sim.add_account("wx1234567890abcdef", "secret", AccountKind::Wechat);
//! let wechat = sim.spawn().await?;
//! // Give the broker `wechat.base_url()` as its `api_base`, then:
//! wechat.sim.inject(Fault::Errcode { errcode: -1, count: 2 });
//! assert!(wechat.sim.calls(Endpoint::Token) <= 1);
//! wechat.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Over HTTP the same controls live under `/__sim/`: `GET calls`,
//! `POST fault` (`{"kind":"errcode","errcode":40164,"count":3}`, kinds
//! `errcode`, `http500`, `malformed`, `drop`, `delay` with `ms`),
//! `POST clear`, `POST latency` (`{"ms":..}`), `POST lifetime`
//! (`{"secs":..}`), `POST advance` (`{"secs":..}`), `GET valid?token=T`,
//! `POST accounts` (`{"appid":..,"secret":..,"kind":"wechat"|"wecom"}`),
//! `GET last?endpoint=NAME`, `GET config`, `POST ip_whitelist`
//! (`{"ips":["203.0.113.8"]}`, `null` turns it off) and `POST seen_ip`
//! (`{"ip":"203.0.113.7"}`: the address WeChat sees every caller come
//! from, as behind a NAT; `null` for the peer's own); for the JS-SDK tickets
//! `POST ticket_fault` (the `fault` body, for the ticket endpoints' own
//! queue), `POST ticket_lifetime` (`{"secs":..}`),
//! `GET ticket_valid?owner=APPID_OR_CORPID&kind=jsapi|wx_card|agent_config&ticket=T`
//! and `POST wecom_agents` (`{"corpid":..,"secret":..,"agentid":..}`); for
//! the Open Platform `POST authorizer_lifetime` (`{"secs":..}`, the
//! `expires_in` of authorizer tokens issued from now on); and
//! for the user-facing APIs
//! `POST users` (`{"appid":..}` → `{"openid":..}`), `POST oauth_code`
//! (`{"appid":..,"openid"?:..,"scope"?:"snsapi_base"|"snsapi_userinfo"}` →
//! `{"code":..,"openid":..}`), `POST js_code` (`{"appid":..,"openid"?:..}` →
//! `{"js_code":..,"openid":..}`) and `POST media` (`{"appid":..,"content":..}`
//! → `{"media_id":..}`). WeCom's suites have their own routes under
//! `/__sim/suites` (adding a suite, pushes, installs, cancellations,
//! faults; listed in `wecom_suite/admin.rs`).

mod admin;
mod app_token;
mod clock;
mod endpoint;
mod faults;
mod media;
mod mp_api;
mod open_platform;
mod openapi;
mod params;
mod push_crypto;
mod quota;
mod reply;
mod request;
mod rids;
mod routes;
mod server;
mod sns;
mod state;
mod tcb;
mod ticket_api;
mod tickets;
mod token_api;
mod tokens;
mod users;
mod wecom_suite;
mod wx_error;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use endpoint::Endpoint;
pub use faults::Fault;
pub use open_platform::Push;
pub use tickets::TicketKind;
pub use users::Scope;
pub use wecom_suite::{
    suite_ticket_xml, InstalledCorp, PushedSuiteTicket, ReceiveId, SimSuite, UrlCheck,
    SUITE_ENDPOINTS,
};

use state::State;
use tokens::TokenStatus;

/// The rules the simulator enforces. Defaults are WeChat's.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// `expires_in` of newly issued tokens.
    pub token_lifetime: Duration,
    /// How long the previous classic token stays valid after a new one is
    /// issued (also the overlap after a forced stable rotation).
    pub classic_overlap: Duration,
    /// A stable token rotates on a plain call only in the last
    /// `stable_window` of its life.
    pub stable_window: Duration,
    /// Minimum time between two `force_refresh: true` stable calls.
    pub stable_force_min_interval: Duration,
    /// `force_refresh: true` stable calls allowed per Beijing day.
    pub stable_force_daily_limit: u32,
    /// Classic (and WeCom) token fetches allowed per app per Beijing day;
    /// past it WeChat answers 45009.
    pub daily_limit: u32,
    /// When set, token calls from any other peer get 40164.
    pub ip_whitelist: Option<Vec<IpAddr>>,
    /// The address every network caller appears to come from (a NAT in
    /// front of the broker, as WeChat sees it): what the whitelist checks
    /// and a 40164 names. `None`: the peer's own address.
    pub seen_ip: Option<IpAddr>,
    /// `expires_in` of newly issued JS-SDK tickets; a same-ticket answer
    /// repeats it while the ticket keeps its first expiry.
    pub ticket_lifetime: Duration,
    /// Ticket calls allowed per Beijing day for each app (or corp, or
    /// WeCom agent) and ticket kind; past it WeChat answers 45009.
    /// WeChat publishes no figure, so the default is generous.
    pub ticket_daily_limit: u32,
    /// WeCom `get_jsapi_ticket` calls allowed per corp in any hour.
    pub wecom_corp_ticket_hourly_limit: u32,
    /// WeCom ticket calls allowed per agent in any hour, for each of
    /// `get_jsapi_ticket` and `ticket/get?type=agent_config`.
    pub wecom_agent_ticket_hourly_limit: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            token_lifetime: Duration::from_secs(7200),
            classic_overlap: Duration::from_secs(300),
            stable_window: Duration::from_secs(300),
            stable_force_min_interval: Duration::from_secs(30),
            stable_force_daily_limit: 20,
            daily_limit: 2000,
            ip_whitelist: None,
            seen_ip: None,
            ticket_lifetime: Duration::from_secs(7200),
            ticket_daily_limit: 100_000,
            wecom_corp_ticket_hourly_limit: 400,
            wecom_agent_ticket_hourly_limit: 100,
        }
    }
}

/// Which WeChat product an account belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountKind {
    /// Official Account, Mini Program, Mini Game: `/cgi-bin/token` and
    /// `/cgi-bin/stable_token`.
    Wechat,
    /// WeCom (企业微信): `/cgi-bin/gettoken` with corpid and corpsecret.
    Wecom,
}

/// The last request an endpoint received, for tests that check what a
/// proxy forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// The raw query string without its `access_token` parameter.
    pub query: String,
    pub body: Vec<u8>,
    /// Header names lowercased, values lossily decoded.
    pub headers: Vec<(String, String)>,
}

/// A handle on one simulated WeChat. Clones share the same state.
#[derive(Clone)]
pub struct Simulator {
    state: Arc<Mutex<State>>,
    /// The Open Platform's accounts and authorizers, apart from the rest.
    open_platform: open_platform::Shared,
    /// WeCom's suites, providers and installs, apart from the rest.
    wecom_suites: wecom_suite::Shared,
}

impl Simulator {
    pub fn new(config: SimConfig) -> Self {
        Simulator {
            state: Arc::new(Mutex::new(State::new(config))),
            open_platform: Arc::default(),
            wecom_suites: Arc::default(),
        }
    }

    /// Lock the shared state. A panic elsewhere while holding the lock
    /// leaves the state usable (every update is a few field writes), so a
    /// poisoned lock is recovered rather than cascading the panic.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers (or replaces) an account.
    pub fn add_account(&self, appid: &str, secret: &str, kind: AccountKind) {
        self.lock().add_account(appid, secret, kind);
    }

    /// Registers one more app (agent) of the WeCom corp `corpid`, with its
    /// own `secret`: `gettoken` with that secret issues the agent's own
    /// token, and the agent gets its own agent_config ticket. The corp
    /// needs no [`AccountKind::Wecom`] account of its own.
    pub fn add_wecom_agent(&self, corpid: &str, secret: &str, agentid: u64) {
        self.lock().add_wecom_agent(corpid, secret, agentid);
    }

    /// Serves HTTP on `listener` until `shutdown` completes, then stops
    /// accepting, lets open connections finish briefly, and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        server::serve(self, listener, shutdown).await
    }

    /// Binds `127.0.0.1:0` and serves there in a spawned task until the
    /// returned handle is shut down or dropped.
    pub async fn spawn(self) -> std::io::Result<SimHandle> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.clone().serve(listener, async move {
            // Dropping the sender counts as a shutdown too.
            let _ = stopped.await;
        }));
        Ok(SimHandle {
            addr,
            sim: self,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Calls made to `endpoint`, failed ones included.
    pub fn calls(&self, endpoint: Endpoint) -> u64 {
        self.lock().calls(endpoint)
    }

    /// Every request received so far (the admin routes aside), by raw
    /// path, whether or not it names an endpoint the simulator knows.
    pub fn requests_by_path(&self) -> std::collections::BTreeMap<String, u64> {
        self.lock().paths()
    }

    /// Calls to all token-issuing endpoints together.
    pub fn total_token_calls(&self) -> u64 {
        let state = self.lock();
        Endpoint::ALL
            .into_iter()
            .filter(|e| e.issues_tokens())
            .map(|e| state.calls(e))
            .sum()
    }

    /// Token calls being answered right now (all apps together).
    pub fn token_calls_in_flight(&self) -> u32 {
        self.lock().token_calls_in_flight
    }

    /// The most token calls ever answered at once (all apps together).
    pub fn max_token_calls_in_flight(&self) -> u32 {
        self.lock().max_token_calls_in_flight
    }

    /// Whether `token` would be accepted right now by a WeChat API.
    pub fn token_valid(&self, token: &str) -> bool {
        matches!(self.lock().token_status(token), TokenStatus::Valid(_))
    }

    /// Calls to all ticket-issuing endpoints together.
    pub fn total_ticket_calls(&self) -> u64 {
        let state = self.lock();
        Endpoint::ALL
            .into_iter()
            .filter(|e| e.issues_tickets())
            .map(|e| state.calls(e))
            .sum()
    }

    /// Whether `ticket` is a `kind` ticket of `owner` (an appid, or a WeCom
    /// corpid for `Jsapi` and `AgentConfig`) that WeChat would accept now.
    pub fn ticket_valid(&self, owner: &str, kind: TicketKind, ticket: &str) -> bool {
        let state = self.lock();
        state.tickets.valid(owner, kind, ticket, state.clock.now())
    }

    /// Whether the simulator ever issued `ticket` (valid or not).
    pub fn ticket_ever_issued(&self, ticket: &str) -> bool {
        self.lock().tickets.ever_issued(ticket)
    }

    /// Whether the simulator ever issued `token` (valid or not).
    pub fn token_ever_issued(&self, token: &str) -> bool {
        self.lock().tokens.ever_issued(token)
    }

    /// Queues a fault for the next token calls.
    pub fn inject(&self, fault: Fault) {
        tracing::info!(?fault, "simulator fault injected");
        self.lock().faults.push(fault);
    }

    /// Queues a fault for the next ticket calls (`getticket`,
    /// `get_jsapi_ticket`, `ticket/get`), apart from the token calls' queue.
    pub fn inject_ticket_fault(&self, fault: Fault) {
        tracing::info!(?fault, "simulator ticket fault injected");
        self.lock().ticket_faults.push(fault);
    }

    /// Drops every queued fault, token and ticket.
    pub fn clear_faults(&self) {
        let mut state = self.lock();
        state.faults.clear();
        state.ticket_faults.clear();
    }

    /// Latency added to every token call from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Replaces the IP whitelist of token calls (`None`: no whitelist).
    pub fn set_ip_whitelist(&self, whitelist: Option<Vec<IpAddr>>) {
        tracing::info!(?whitelist, "simulator ip whitelist set");
        self.lock().config.ip_whitelist = whitelist;
    }

    /// Makes every network caller appear to come from `ip` (`None`: from
    /// its own address), as a NAT in front of the broker would.
    pub fn set_seen_ip(&self, ip: Option<IpAddr>) {
        tracing::info!(?ip, "simulator seen ip set");
        self.lock().config.seen_ip = ip;
    }

    /// `expires_in` of tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.lock().config.token_lifetime = lifetime;
    }

    /// `expires_in` of tickets issued from now on (a ticket already issued
    /// keeps its expiry).
    pub fn set_ticket_lifetime(&self, lifetime: Duration) {
        self.lock().config.ticket_lifetime = lifetime;
    }

    /// Moves the simulator's clock forward: tokens expire and quota days
    /// roll over as if `by` had passed.
    pub fn advance(&self, by: Duration) {
        tracing::info!(secs = by.as_secs_f64(), "simulator clock advanced");
        self.lock().clock.advance(by);
    }

    /// Issues a classic token as if another party had called
    /// `/cgi-bin/token`, invalidating the current one after the overlap
    /// (counts as a call and against the quota; `None` for an unknown or
    /// WeCom account, or when the quota is spent).
    pub fn issue_classic_directly(&self, appid: &str) -> Option<String> {
        self.lock().issue_classic_directly(appid)
    }

    /// The last request `endpoint` received.
    pub fn last_request(&self, endpoint: Endpoint) -> Option<RecordedRequest> {
        self.lock().last_request(endpoint)
    }

    /// A new user (follower) of `appid`; returns the openid.
    pub fn add_user(&self, appid: &str) -> String {
        self.lock().users.add_user(appid)
    }

    /// A web OAuth code for a new user of `appid` who consented to
    /// `snsapi_userinfo`, as WeChat hands one to the redirect page; valid
    /// once, for five minutes, at `/sns/oauth2/access_token`.
    pub fn mint_oauth_code(&self, appid: &str) -> String {
        let openid = self.add_user(appid);
        self.mint_oauth_code_for(appid, &openid, Scope::UserInfo)
    }

    /// A web OAuth code for a known user and scope.
    pub fn mint_oauth_code_for(&self, appid: &str, openid: &str, scope: Scope) -> String {
        let mut state = self.lock();
        let now = state.clock.now();
        state.users.mint_oauth_code(appid, openid, scope, now)
    }

    /// A Mini Program `js_code` for a new user of `appid`, as `wx.login()`
    /// returns one; valid once, for five minutes, at `/sns/jscode2session`.
    pub fn mint_js_code(&self, appid: &str) -> String {
        let openid = self.add_user(appid);
        self.mint_js_code_for(appid, &openid)
    }

    /// A `js_code` for a known user.
    pub fn mint_js_code_for(&self, appid: &str, openid: &str) -> String {
        let mut state = self.lock();
        let now = state.clock.now();
        state.users.mint_js_code(appid, openid, now)
    }

    /// Whether `token` is a user OAuth token `/sns/userinfo` accepts now.
    pub fn user_token_valid(&self, token: &str) -> bool {
        let state = self.lock();
        state.users.check_token(token, state.clock.now()).is_ok()
    }

    /// Stores a temporary image for `appid`, as `media/upload` would;
    /// returns the media_id `media/get` serves it under.
    pub fn add_media(&self, appid: &str, content: &[u8]) -> String {
        self.lock().media.add(appid, content.to_vec())
    }

    /// What `quota/get` would answer for `appid` and `cgi_path` now:
    /// (daily limit, used); `None` for a path WeChat would not know.
    pub fn quota(&self, appid: &str, cgi_path: &str) -> Option<(u32, u32)> {
        self.lock().quota_of(appid, cgi_path)
    }

    /// `clear_quota` resets of `appid` this Beijing calendar month (10
    /// allowed).
    pub fn quota_resets(&self, appid: &str) -> u32 {
        self.lock().quota_resets(appid)
    }

    /// A snapshot of the current configuration.
    pub fn config(&self) -> SimConfig {
        self.lock().config.clone()
    }
}

/// A simulator serving on a local port. Dropping it stops the server.
pub struct SimHandle {
    pub addr: SocketAddr,
    pub sim: Simulator,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`, the `api_base` to give the broker.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits until it has stopped.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "simulator server failed"),
                Err(error) => tracing::warn!(%error, "simulator server task failed"),
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
