//! WeCom's service providers (第三方应用, 代开发), simulated: suites with
//! their secrets, callback token and EncodingAESKey; the encrypted pushes
//! WeCom sends to a suite's callback URL (`suite_ticket` on a timer or on
//! demand, out of order on demand, sealed for the suite id or the
//! provider's corpid; `create_auth`, `change_auth`, `cancel_auth`,
//! `reset_permanent_code`); WeCom's GET URL check; installs by corps;
//! and the `/cgi-bin/service/*` endpoints with their errcodes
//! ([`api`]), driven over HTTP by the `/__sim/suites` admin routes
//! ([`admin`]).
//!
//! Corp tokens live in the simulator's token book as WeCom tokens, so
//! the WeCom APIs that take a token (the JS-SDK tickets) accept them; a
//! 代开发 install's permanent code is one more app secret of its corp,
//! so plain `gettoken` serves it. The push encryption is the simulator's
//! own (`push_crypto`), apart from the broker's.

mod admin;
mod api;
mod seal;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing::info;

use super::clock::SimTime;
use super::faults::FaultQueue;
use super::open_platform::Push;
use super::push_crypto::{self, random};
use super::tokens::{Family, Holder};
use super::{Fault, Simulator};

pub(crate) use admin::handle as handle_admin;
pub(crate) use api::handle;
pub use seal::suite_ticket_xml;

/// The `/cgi-bin/service/*` endpoints the simulator answers, by the path
/// after `/cgi-bin/service/`: the names [`Simulator::suite_calls`] and
/// [`Simulator::inject_suite_fault`] take.
pub const SUITE_ENDPOINTS: [&str; 6] = [
    "get_suite_token",
    "get_provider_token",
    "get_pre_auth_code",
    "v2/get_permanent_code",
    "get_auth_info",
    "get_corp_token",
];

/// Tickets a suite keeps recognising, newest last; older ones are
/// forgotten (they would have expired long before).
const KEPT_TICKETS: usize = 32;
/// Expired tokens a chain still recognises (so a call gets 42009, not
/// 40082).
const KEPT_TOKENS: usize = 16;
/// How long an install's `AuthCode` may be exchanged, once.
const AUTH_CODE_LIFETIME: Duration = Duration::from_secs(600);
/// How far ahead of the wall clock a ticket's `TimeStamp` may be pushed
/// to keep every new ticket newer than the last (pushes faster than one a
/// second); well inside the minutes a receiver tolerates.
const MAX_STAMP_LEAD_SECS: u64 = 60;

/// A suite (app template) as WeCom knows it.
#[derive(Clone, Debug)]
pub struct SimSuite {
    pub suite_id: String,
    pub suite_secret: String,
    /// The callback Token pushes are signed with.
    pub token: String,
    /// The callback EncodingAESKey, 43 base64 characters.
    pub aes_key: String,
    /// The service provider's corpid: the other receive id of pushes, and
    /// with `provider_secret` the key to `get_provider_token`.
    pub provider_corpid: String,
    pub provider_secret: Option<String>,
    /// A 代开发 template: an install's permanent code is the corp app's
    /// secret for `gettoken`, and `reset_permanent_code` replaces it.
    pub customized: bool,
}

/// Whose id ends a push's plaintext: WeCom uses both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiveId {
    SuiteId,
    ProviderCorpId,
}

impl ReceiveId {
    pub fn from_name(name: &str) -> Option<ReceiveId> {
        match name {
            "suite_id" => Some(ReceiveId::SuiteId),
            "provider_corpid" => Some(ReceiveId::ProviderCorpId),
            _ => None,
        }
    }
}

/// A `suite_ticket` the simulator pushed, and how the callback answered
/// (`None`: no callback URL, or it could not be reached).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedSuiteTicket {
    pub ticket: String,
    /// The push's `TimeStamp`: when WeCom issued the ticket.
    pub timestamp: u64,
    pub status: Option<u16>,
}

/// A corp that just installed a suite, and how the callback answered the
/// `create_auth` push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledCorp {
    pub corpid: String,
    pub status: Option<u16>,
}

/// WeCom's URL check, ready to send as `GET {callback}?{query}`: the
/// callback must answer `plaintext`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlCheck {
    pub query: String,
    pub plaintext: String,
}

struct Ticket {
    value: String,
    expires: SimTime,
}

/// A credential WeCom hands out unchanged while it is valid (a new one
/// only once it has expired), and the expired ones it still recognises.
#[derive(Default)]
struct TokenChain {
    current: Option<(String, SimTime)>,
    past: VecDeque<(String, SimTime)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChainStatus {
    Valid,
    Expired,
    Unknown,
}

impl TokenChain {
    /// The current token and its seconds left, or a new one.
    fn grant(&mut self, now: SimTime, lifetime: Duration, prefix: &str) -> (String, u64) {
        if let Some((token, expires)) = &self.current {
            if now < *expires {
                return (token.clone(), (*expires - now).as_secs());
            }
        }
        if let Some(old) = self.current.take() {
            self.past.push_back(old);
            if self.past.len() > KEPT_TOKENS {
                self.past.pop_front();
            }
        }
        let token = format!("{prefix}{}", random(96));
        self.current = Some((token.clone(), now + lifetime));
        (token, lifetime.as_secs())
    }

    fn status(&self, token: &str, now: SimTime) -> ChainStatus {
        let found = self
            .current
            .iter()
            .chain(self.past.iter())
            .find(|(t, _)| t == token);
        match found {
            Some((_, expires)) if now < *expires => ChainStatus::Valid,
            Some(_) => ChainStatus::Expired,
            None => ChainStatus::Unknown,
        }
    }
}

struct Suite {
    spec: SimSuite,
    key: [u8; 32],
    callback_url: Option<String>,
    receive_id: ReceiveId,
    tickets: VecDeque<Ticket>,
    token: TokenChain,
    /// Successful `get_suite_token` calls on the Beijing day.
    quota: (u64, u32),
    /// The `TimeStamp` of the newest ticket pushed.
    last_stamp: u64,
    pusher: Option<tokio::task::AbortHandle>,
}

impl Suite {
    fn receive_id(&self, which: ReceiveId) -> &str {
        match which {
            ReceiveId::SuiteId => &self.spec.suite_id,
            ReceiveId::ProviderCorpId => &self.spec.provider_corpid,
        }
    }
}

struct Provider {
    secret: String,
    token: TokenChain,
}

#[derive(Clone)]
struct Install {
    corp_name: String,
    permanent_code: String,
    agentid: u64,
    installed_at: u64,
    customized: bool,
}

impl Install {
    /// Whose token the corp's calls carry: the suite's app in the corp,
    /// or for 代开发 the corp app whose secret is the permanent code.
    fn holder(&self, suite_id: &str, corpid: &str) -> Holder {
        if self.customized {
            Holder::wecom(corpid, &self.permanent_code)
        } else {
            Holder::wecom(corpid, &format!("suite:{suite_id}"))
        }
    }
}

struct AuthCode {
    suite_id: String,
    corpid: String,
    expires: SimTime,
}

/// The suite family's part of the simulator's state.
pub(crate) struct Suites {
    suites: HashMap<String, Suite>,
    providers: HashMap<String, Provider>,
    /// By (suite id, corpid).
    installs: BTreeMap<(String, String), Install>,
    auth_codes: HashMap<String, AuthCode>,
    calls: HashMap<&'static str, u64>,
    faults: HashMap<&'static str, FaultQueue>,
    ticket_lifetime: Duration,
    token_lifetime: Duration,
    daily_limit: u32,
    next_corp: u64,
    http: reqwest::Client,
}

impl Default for Suites {
    fn default() -> Self {
        Suites {
            suites: HashMap::new(),
            providers: HashMap::new(),
            installs: BTreeMap::new(),
            auth_codes: HashMap::new(),
            calls: HashMap::new(),
            faults: HashMap::new(),
            ticket_lifetime: Duration::from_secs(1800),
            token_lifetime: Duration::from_secs(7200),
            daily_limit: 2000,
            next_corp: 0,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_default(),
        }
    }
}

/// The handle the simulator keeps.
pub(crate) type Shared = Arc<Mutex<Suites>>;

/// The name in [`SUITE_ENDPOINTS`] equal to `name`.
fn endpoint(name: &str) -> Option<&'static str> {
    SUITE_ENDPOINTS.into_iter().find(|e| *e == name)
}

/// The events a suite pushes, as WeCom's documentation shows them.
enum Event<'a> {
    Ticket { ticket: &'a str, timestamp: u64 },
    CreateAuth { auth_code: &'a str },
    ChangeAuth { corpid: &'a str },
    CancelAuth { corpid: &'a str },
    ResetPermanentCode { auth_code: &'a str },
}

impl Simulator {
    pub(super) fn suites(&self) -> MutexGuard<'_, Suites> {
        self.wecom_suites.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The simulator's time and Beijing day, read before the suites are
    /// locked (the two locks are never held together).
    fn sim_now(&self) -> (SimTime, u64, u64) {
        let state = self.lock();
        (
            state.clock.now(),
            state.clock.unix_secs(),
            state.clock.beijing_day(),
        )
    }

    /// Registers (or replaces) a suite, and its provider.
    pub fn add_suite(&self, suite: SimSuite) {
        let key = push_crypto::aes_key(&suite.aes_key).expect("a 43-character EncodingAESKey");
        let mut suites = self.suites();
        if let Some(secret) = &suite.provider_secret {
            suites.providers.insert(
                suite.provider_corpid.clone(),
                Provider {
                    secret: secret.clone(),
                    token: TokenChain::default(),
                },
            );
        }
        info!(suite_id = %suite.suite_id, customized = suite.customized, "simulator suite added");
        let old = suites.suites.insert(
            suite.suite_id.clone(),
            Suite {
                spec: suite,
                key,
                callback_url: None,
                receive_id: ReceiveId::SuiteId,
                tickets: VecDeque::new(),
                token: TokenChain::default(),
                quota: (0, 0),
                last_stamp: 0,
                pusher: None,
            },
        );
        if let Some(pusher) = old.and_then(|s| s.pusher) {
            pusher.abort();
        }
    }

    /// Where the suite's pushes and URL checks go (the broker's callback
    /// route).
    pub fn set_suite_callback_url(&self, suite_id: &str, url: &str) {
        if let Some(suite) = self.suites().suites.get_mut(suite_id) {
            suite.callback_url = Some(url.to_owned());
        }
    }

    /// Which receive id the suite's pushes are sealed for from now on.
    pub fn set_suite_receive_id(&self, suite_id: &str, receive_id: ReceiveId) {
        if let Some(suite) = self.suites().suites.get_mut(suite_id) {
            suite.receive_id = receive_id;
        }
    }

    /// How long a pushed `suite_ticket` is accepted (WeCom: 30 minutes).
    pub fn set_suite_ticket_lifetime(&self, lifetime: Duration) {
        self.suites().ticket_lifetime = lifetime;
    }

    /// `expires_in` of suite and provider tokens issued from now on.
    pub fn set_suite_token_lifetime(&self, lifetime: Duration) {
        self.suites().token_lifetime = lifetime;
    }

    /// `get_suite_token` calls a suite may make a Beijing day before 45009.
    pub fn set_suite_token_daily_limit(&self, limit: u32) {
        self.suites().daily_limit = limit;
    }

    /// Calls made to a `/cgi-bin/service/*` endpoint, by its name in
    /// [`SUITE_ENDPOINTS`], failed ones included.
    pub fn suite_calls(&self, endpoint: &str) -> u64 {
        self.suites().calls.get(endpoint).copied().unwrap_or(0)
    }

    /// Queues a fault for the next calls of one `/cgi-bin/service/*`
    /// endpoint; `false` when `endpoint` is not one.
    pub fn inject_suite_fault(&self, endpoint_name: &str, fault: Fault) -> bool {
        let Some(endpoint) = endpoint(endpoint_name) else {
            return false;
        };
        info!(endpoint, ?fault, "simulator suite fault injected");
        self.suites()
            .faults
            .entry(endpoint)
            .or_default()
            .push(fault);
        true
    }

    /// Whether a service API would accept `token` as a suite token now.
    pub fn suite_token_valid(&self, token: &str) -> bool {
        let (now, _, _) = self.sim_now();
        self.suites()
            .suites
            .values()
            .any(|s| s.token.status(token, now) == ChainStatus::Valid)
    }

    /// Whether a service API would accept `token` as a provider token now.
    pub fn provider_token_valid(&self, token: &str) -> bool {
        let (now, _, _) = self.sim_now();
        self.suites()
            .providers
            .values()
            .any(|p| p.token.status(token, now) == ChainStatus::Valid)
    }

    /// The newest ticket WeCom issued for the suite.
    pub fn latest_suite_ticket(&self, suite_id: &str) -> Option<String> {
        let suites = self.suites();
        let suite = suites.suites.get(suite_id)?;
        suite.tickets.back().map(|t| t.value.clone())
    }

    /// Issues a new `suite_ticket` and pushes it to the callback URL now.
    pub async fn push_suite_ticket(&self, suite_id: &str) -> Option<PushedSuiteTicket> {
        self.push_delayed_suite_ticket(suite_id, Duration::ZERO)
            .await
    }

    /// Pushes a ticket WeCom issued `age` ago and is delivering only now:
    /// its `TimeStamp` is older than any pushed since, and it expires
    /// `age` sooner. An `age` past the ticket lifetime pushes a dead
    /// ticket (a broker that keeps it gets 40085).
    ///
    /// `TimeStamp`s follow the wall clock, as the receiver's does (the
    /// simulator's [`advance`](Simulator::advance) ages tickets, not
    /// stamps); each ticket pushed without delay is stamped at least a
    /// second after the one before, as WeCom's, ten minutes apart, are.
    pub async fn push_delayed_suite_ticket(
        &self,
        suite_id: &str,
        age: Duration,
    ) -> Option<PushedSuiteTicket> {
        let (now, _, _) = self.sim_now();
        let wall = push_crypto::wall_secs();
        let ticket = random(64);
        let timestamp = {
            let mut suites = self.suites();
            let expires = (now + suites.ticket_lifetime).saturating_sub(age);
            let suite = suites.suites.get_mut(suite_id)?;
            let timestamp = if age.is_zero() {
                let stamp = wall.max((suite.last_stamp + 1).min(wall + MAX_STAMP_LEAD_SECS));
                suite.last_stamp = suite.last_stamp.max(stamp);
                stamp
            } else {
                wall.saturating_sub(age.as_secs())
            };
            suite.tickets.push_back(Ticket {
                value: ticket.clone(),
                expires,
            });
            if suite.tickets.len() > KEPT_TICKETS {
                suite.tickets.pop_front();
            }
            timestamp
        };
        let event = Event::Ticket {
            ticket: &ticket,
            timestamp,
        };
        let status = self.send_suite_push(suite_id, &event).await;
        info!(
            suite_id,
            timestamp,
            ?status,
            "simulator pushed a suite_ticket"
        );
        Some(PushedSuiteTicket {
            ticket,
            timestamp,
            status,
        })
    }

    /// Pushes a `suite_ticket` every `every` until the returned handle is
    /// aborted, as WeCom does every 10 minutes.
    pub fn spawn_suite_ticket_pusher(
        &self,
        suite_id: &str,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let sim = self.clone();
        let suite_id = suite_id.to_owned();
        tokio::spawn(async move {
            loop {
                sim.push_suite_ticket(&suite_id).await;
                tokio::time::sleep(every).await;
            }
        })
    }

    /// A sealed push of `inner` (the event XML) for the suite, signed now,
    /// for tests that tamper with it before sending.
    pub fn seal_suite_push(&self, suite_id: &str, inner: &str, receive: ReceiveId) -> Option<Push> {
        self.seal_suite_push_at(suite_id, inner, receive, push_crypto::wall_secs())
    }

    /// [`Simulator::seal_suite_push`] with the query's `timestamp` given
    /// (Unix seconds), for pushes outside the receiver's window.
    pub fn seal_suite_push_at(
        &self,
        suite_id: &str,
        inner: &str,
        receive: ReceiveId,
        timestamp: u64,
    ) -> Option<Push> {
        let suites = self.suites();
        let suite = suites.suites.get(suite_id)?;
        Some(seal::push(
            suite,
            suite.receive_id(receive),
            inner,
            timestamp,
        ))
    }

    /// WeCom's URL check for the suite's callback, signed now.
    pub fn suite_url_check(&self, suite_id: &str, receive: ReceiveId) -> Option<UrlCheck> {
        let suites = self.suites();
        let suite = suites.suites.get(suite_id)?;
        Some(seal::url_check(
            suite,
            suite.receive_id(receive),
            push_crypto::wall_secs(),
        ))
    }

    /// Sends WeCom's URL check to the callback URL: the status, and
    /// whether the body was exactly the plaintext (`None`: no callback
    /// URL, or it could not be reached).
    pub async fn check_suite_callback_url(
        &self,
        suite_id: &str,
        receive: ReceiveId,
    ) -> Option<(u16, bool)> {
        let (url, check, http) = {
            let suites = self.suites();
            let suite = suites.suites.get(suite_id)?;
            let check = seal::url_check(suite, suite.receive_id(receive), push_crypto::wall_secs());
            (suite.callback_url.clone()?, check, suites.http.clone())
        };
        let response = http
            .get(format!("{url}?{}", check.query))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        let body = response.bytes().await.ok()?;
        Some((status, body == check.plaintext.as_bytes()))
    }

    /// A corp installs the suite: WeCom pushes `create_auth` with an
    /// `AuthCode` that `v2/get_permanent_code` exchanges once, within 10
    /// minutes. A 代开发 install's permanent code works with `gettoken`
    /// at once.
    pub async fn install_corp(&self, suite_id: &str) -> Option<InstalledCorp> {
        let corpid = self.add_installed_corps(suite_id, 1).pop()?;
        let (now, _, _) = self.sim_now();
        let auth_code = self.mint_auth_code(suite_id, &corpid, now);
        let event = Event::CreateAuth {
            auth_code: &auth_code,
        };
        let status = self.send_suite_push(suite_id, &event).await;
        info!(
            suite_id,
            corpid,
            ?status,
            "simulator corp installed a suite"
        );
        Some(InstalledCorp { corpid, status })
    }

    /// Installs `count` corps quietly (no push, no auth code): for seeding
    /// a broker's store with [`Simulator::permanent_code_of`]. Returns
    /// their corpids.
    pub fn add_installed_corps(&self, suite_id: &str, count: usize) -> Vec<String> {
        let (_, unix, _) = self.sim_now();
        let mut agents = Vec::new();
        let corpids = {
            let mut suites = self.suites();
            let Some(customized) = suites.suites.get(suite_id).map(|s| s.spec.customized) else {
                return Vec::new();
            };
            (0..count)
                .map(|_| {
                    suites.next_corp += 1;
                    let n = suites.next_corp;
                    let corpid = format!("wwcorp{n:012}");
                    let install = Install {
                        corp_name: format!("Corp {n}"),
                        permanent_code: random(43),
                        agentid: 1_000_000 + n,
                        installed_at: unix,
                        customized,
                    };
                    if customized {
                        agents.push((
                            corpid.clone(),
                            install.permanent_code.clone(),
                            install.agentid,
                        ));
                    }
                    suites
                        .installs
                        .insert((suite_id.to_owned(), corpid.clone()), install);
                    corpid
                })
                .collect()
        };
        let mut state = self.lock();
        for (corpid, secret, agentid) in agents {
            state.add_wecom_agent(&corpid, &secret, agentid);
        }
        corpids
    }

    /// The corps that have the suite installed now.
    pub fn installed_corps(&self, suite_id: &str) -> Vec<String> {
        self.suites()
            .installs
            .keys()
            .filter(|(suite, _)| suite == suite_id)
            .map(|(_, corpid)| corpid.clone())
            .collect()
    }

    /// The permanent code of the corp's install, as WeCom holds it.
    pub fn permanent_code_of(&self, suite_id: &str, corpid: &str) -> Option<String> {
        self.suites()
            .installs
            .get(&(suite_id.to_owned(), corpid.to_owned()))
            .map(|i| i.permanent_code.clone())
    }

    /// The corp renames itself: `get_auth_info` shows the new name, and
    /// WeCom pushes `change_auth`.
    pub async fn rename_corp(&self, suite_id: &str, corpid: &str, corp_name: &str) -> Option<u16> {
        {
            let mut suites = self.suites();
            let install = suites
                .installs
                .get_mut(&(suite_id.to_owned(), corpid.to_owned()))?;
            install.corp_name = corp_name.to_owned();
        }
        self.send_suite_push(suite_id, &Event::ChangeAuth { corpid })
            .await
    }

    /// The corp removes the suite: its permanent code and corp tokens die
    /// at once, and WeCom pushes `cancel_auth`.
    pub async fn cancel_corp(&self, suite_id: &str, corpid: &str) -> Option<u16> {
        let install = self
            .suites()
            .installs
            .remove(&(suite_id.to_owned(), corpid.to_owned()))?;
        {
            let mut state = self.lock();
            let now = state.clock.now();
            kill_tokens(&mut state, &install.holder(suite_id, corpid), now);
            if install.customized {
                state.remove_wecom_agent(corpid, &install.permanent_code);
            }
        }
        info!(suite_id, corpid, "simulator corp cancelled a suite");
        self.send_suite_push(suite_id, &Event::CancelAuth { corpid })
            .await
    }

    /// 代开发: the corp resets the app's secret. The old permanent code
    /// and its tokens die at once; WeCom pushes `reset_permanent_code`
    /// with an `AuthCode` that `v2/get_permanent_code` exchanges for the
    /// new one. `None` for an install that is not 代开发.
    pub async fn reset_permanent_code(&self, suite_id: &str, corpid: &str) -> Option<u16> {
        let (now, _, _) = self.sim_now();
        let (old, new, agentid) = {
            let mut suites = self.suites();
            let install = suites
                .installs
                .get_mut(&(suite_id.to_owned(), corpid.to_owned()))
                .filter(|i| i.customized)?;
            let new = random(43);
            let old = std::mem::replace(&mut install.permanent_code, new.clone());
            (old, new, install.agentid)
        };
        {
            let mut state = self.lock();
            kill_tokens(&mut state, &Holder::wecom(corpid, &old), now);
            state.remove_wecom_agent(corpid, &old);
            state.add_wecom_agent(corpid, &new, agentid);
        }
        let auth_code = self.mint_auth_code(suite_id, corpid, now);
        info!(suite_id, corpid, "simulator corp reset a permanent code");
        let event = Event::ResetPermanentCode {
            auth_code: &auth_code,
        };
        self.send_suite_push(suite_id, &event).await
    }

    fn mint_auth_code(&self, suite_id: &str, corpid: &str, now: SimTime) -> String {
        let code = random(64);
        self.suites().auth_codes.insert(
            code.clone(),
            AuthCode {
                suite_id: suite_id.to_owned(),
                corpid: corpid.to_owned(),
                expires: now + AUTH_CODE_LIFETIME,
            },
        );
        code
    }

    /// Seals `event` for the suite's current receive id and POSTs it to
    /// the callback URL; the status it answered.
    async fn send_suite_push(&self, suite_id: &str, event: &Event<'_>) -> Option<u16> {
        let wall = push_crypto::wall_secs();
        let (url, push, http) = {
            let suites = self.suites();
            let suite = suites.suites.get(suite_id)?;
            let inner = seal::event_xml(suite_id, event, wall);
            let push = seal::push(suite, suite.receive_id(suite.receive_id), &inner, wall);
            (suite.callback_url.clone()?, push, suites.http.clone())
        };
        let response = http
            .post(format!("{url}?{}", push.query))
            .header("content-type", "text/xml")
            .body(push.body)
            .send()
            .await
            .ok()?;
        Some(response.status().as_u16())
    }
}

/// Ends every token of `holder` now (the corp's install is gone or its
/// secret changed).
fn kill_tokens(state: &mut super::state::State, holder: &Holder, now: SimTime) {
    let (current, previous) = state.tokens.lineage(holder, Family::Wecom);
    for token in current.iter().chain(previous.iter()) {
        state.tokens.cap(token, now);
    }
}
