//! All mutable simulator state behind one `std::sync::Mutex` (never held
//! across an `.await`): accounts, the token book, the users and their
//! credentials, the JS-SDK tickets, uploaded media, quotas, the fault
//! queues, call counters and recorded requests; and WeChat's issuing rules for the
//! three token families, which need all of these at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use tracing::{debug, info};

use super::clock::{Clock, SimTime};
use super::faults::FaultQueue;
use super::media::MediaStore;
use super::quota::{Counter, Quotas};
use super::rids::RidBook;
use super::tickets::TicketBook;
use super::tokens::{Family, Holder, TokenBook, TokenStatus};
use super::users::UserBook;
use super::wx_error::WxError;
use super::{AccountKind, Endpoint, RecordedRequest, SimConfig};
use crate::secret::fingerprint;

/// WeChat's daily limit on plain `stable_token` calls; large enough that
/// only a runaway loop reaches it, so it is not configurable.
const STABLE_DAILY_LIMIT: u32 = 500_000;

#[derive(Debug)]
struct Account {
    secret: String,
    kind: AccountKind,
}

/// A successful token answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    pub token: String,
    pub expires_in: u64,
}

#[derive(Debug)]
pub(crate) struct State {
    pub config: SimConfig,
    pub clock: Clock,
    pub tokens: TokenBook,
    pub faults: FaultQueue,
    /// Faults for the ticket endpoints, apart from the token ones.
    pub ticket_faults: FaultQueue,
    pub tickets: TicketBook,
    pub latency: Duration,
    /// Token calls being answered now, and the most ever at once: a
    /// broker keeps one per app in flight (single flight).
    pub token_calls_in_flight: u32,
    pub max_token_calls_in_flight: u32,
    pub users: UserBook,
    pub media: MediaStore,
    /// Error answers with a rid, for `rid/get`.
    pub rids: RidBook,
    accounts: HashMap<String, Account>,
    /// WeCom apps beyond an account's own secret: corpid -> secret -> agentid.
    wecom_agents: HashMap<String, HashMap<String, u64>>,
    quotas: Quotas,
    last_force: HashMap<String, SimTime>,
    calls: HashMap<Endpoint, u64>,
    last: HashMap<Endpoint, RecordedRequest>,
    /// Every request by its raw path, known endpoint or not, so a test
    /// can tell that nothing at all reached the simulator.
    paths: HashMap<String, u64>,
}

/// Distinct paths [`State::count_path`] keeps apart; past it, one
/// bucket, so a flood of random paths cannot grow the map.
const MAX_PATHS: usize = 4096;
const OTHER_PATHS: &str = "(other)";

impl State {
    pub(crate) fn new(config: SimConfig) -> Self {
        State {
            config,
            clock: Clock::new(),
            tokens: TokenBook::default(),
            faults: FaultQueue::default(),
            ticket_faults: FaultQueue::default(),
            tickets: TicketBook::default(),
            latency: Duration::ZERO,
            token_calls_in_flight: 0,
            max_token_calls_in_flight: 0,
            users: UserBook::default(),
            media: MediaStore::default(),
            rids: RidBook::default(),
            accounts: HashMap::new(),
            wecom_agents: HashMap::new(),
            quotas: Quotas::default(),
            last_force: HashMap::new(),
            calls: HashMap::new(),
            last: HashMap::new(),
            paths: HashMap::new(),
        }
    }

    pub(crate) fn count_path(&mut self, path: &str) {
        if let Some(count) = self.paths.get_mut(path) {
            *count += 1;
            return;
        }
        let key = if self.paths.len() < MAX_PATHS {
            path
        } else {
            OTHER_PATHS
        };
        *self.paths.entry(key.to_owned()).or_default() += 1;
    }

    pub(crate) fn paths(&self) -> std::collections::BTreeMap<String, u64> {
        self.paths.iter().map(|(p, n)| (p.clone(), *n)).collect()
    }

    pub(crate) fn add_account(&mut self, appid: &str, secret: &str, kind: AccountKind) {
        info!(appid, ?kind, "simulator account added");
        self.accounts.insert(
            appid.to_owned(),
            Account {
                secret: secret.to_owned(),
                kind,
            },
        );
    }

    /// One more app (agent) of a WeCom corp, with its own secret: it gets
    /// its own token from `gettoken` and its own agent_config ticket.
    pub(crate) fn add_wecom_agent(&mut self, corpid: &str, secret: &str, agentid: u64) {
        info!(corpid, agentid, "simulator wecom agent added");
        self.wecom_agents
            .entry(corpid.to_owned())
            .or_default()
            .insert(secret.to_owned(), agentid);
    }

    /// Forgets one app secret of a WeCom corp (a 代开发 install cancelled,
    /// or its permanent code reset): `gettoken` with it fails from now on.
    pub(crate) fn remove_wecom_agent(&mut self, corpid: &str, secret: &str) {
        if let Some(agents) = self.wecom_agents.get_mut(corpid) {
            agents.remove(secret);
            if agents.is_empty() {
                self.wecom_agents.remove(corpid);
            }
        }
    }

    /// The agentid registered for a WeCom app, if any (an account added
    /// with [`AccountKind::Wecom`] alone has none).
    pub(crate) fn wecom_agentid(&self, holder: &Holder) -> Option<u64> {
        let secret = holder.agent.as_deref()?;
        self.wecom_agents.get(&holder.appid)?.get(secret).copied()
    }

    pub(crate) fn count_call(&mut self, endpoint: Endpoint) {
        *self.calls.entry(endpoint).or_default() += 1;
    }

    pub(crate) fn calls(&self, endpoint: Endpoint) -> u64 {
        self.calls.get(&endpoint).copied().unwrap_or(0)
    }

    pub(crate) fn record(&mut self, endpoint: Endpoint, request: RecordedRequest) {
        self.last.insert(endpoint, request);
    }

    pub(crate) fn last_request(&self, endpoint: Endpoint) -> Option<RecordedRequest> {
        self.last.get(&endpoint).cloned()
    }

    pub(crate) fn token_status(&self, token: &str) -> TokenStatus {
        self.tokens.status(token, self.clock.now())
    }

    /// `GET /cgi-bin/token`: every success mints a new token; the previous
    /// one keeps `classic_overlap` more (never past its own expiry) and any
    /// older one dies at once.
    pub(crate) fn grant_classic(
        &mut self,
        appid: &str,
        secret: &str,
        peer: Option<IpAddr>,
    ) -> Result<Grant, WxError> {
        self.check_wechat_account(appid, secret)?;
        self.check_ip(peer, AccountKind::Wechat)?;
        self.take_quota(appid, Counter::Classic, self.config.daily_limit)?;
        Ok(self.rotate_classic(appid))
    }

    /// Another party fetching a classic token behind everyone's back: no
    /// faults, latency or whitelist, but the app's quota still applies.
    pub(crate) fn issue_classic_directly(&mut self, appid: &str) -> Option<String> {
        self.count_call(Endpoint::Token);
        let is_wechat = matches!(
            self.accounts.get(appid),
            Some(Account {
                kind: AccountKind::Wechat,
                ..
            })
        );
        if !is_wechat {
            return None;
        }
        self.take_quota(appid, Counter::Classic, self.config.daily_limit)
            .ok()?;
        Some(self.rotate_classic(appid).token)
    }

    fn rotate_classic(&mut self, appid: &str) -> Grant {
        let now = self.clock.now();
        let (current, previous) = self.tokens.lineage(&Holder::app(appid), Family::Classic);
        if let Some(previous) = previous {
            self.tokens.cap(&previous, now);
        }
        if let Some(current) = current {
            self.tokens.cap(&current, now + self.config.classic_overlap);
        }
        self.mint(&Holder::app(appid), Family::Classic)
    }

    /// `POST /cgi-bin/stable_token`: the same token while it has more than
    /// `stable_window` left, a new one (overlapping until the old expires)
    /// inside the window, and a rate-limited forced rotation on request.
    pub(crate) fn grant_stable(
        &mut self,
        appid: &str,
        secret: &str,
        force_refresh: bool,
        peer: Option<IpAddr>,
    ) -> Result<Grant, WxError> {
        self.check_wechat_account(appid, secret)?;
        self.check_ip(peer, AccountKind::Wechat)?;
        let now = self.clock.now();
        let day = self.clock.beijing_day();
        if !self
            .quotas
            .has_room(appid, Counter::Stable, day, STABLE_DAILY_LIMIT)
        {
            return Err(quota_exhausted(appid));
        }
        if force_refresh {
            if !self.quotas.has_room(
                appid,
                Counter::StableForce,
                day,
                self.config.stable_force_daily_limit,
            ) {
                return Err(quota_exhausted(appid));
            }
            if let Some(&last) = self.last_force.get(appid) {
                if now < last + self.config.stable_force_min_interval {
                    debug!(appid, "stable force refresh too soon");
                    return Err(WxError::from_code(45011));
                }
            }
            self.quotas.take(appid, Counter::Stable, day);
            self.quotas.take(appid, Counter::StableForce, day);
            self.last_force.insert(appid.to_owned(), now);
            let holder = Holder::app(appid);
            if let Some((current, _)) = self.tokens.current(&holder, Family::Stable, now) {
                self.tokens.cap(&current, now + self.config.classic_overlap);
            }
            return Ok(self.mint(&holder, Family::Stable));
        }
        self.quotas.take(appid, Counter::Stable, day);
        let holder = Holder::app(appid);
        match self.tokens.current(&holder, Family::Stable, now) {
            Some((token, left)) if left > self.config.stable_window => Ok(Grant {
                token,
                expires_in: left.as_secs(),
            }),
            // Inside the window (or none yet): rotate; the old token simply
            // runs out at its own expiry.
            _ => Ok(self.mint(&holder, Family::Stable)),
        }
    }

    /// WeCom `gettoken`: WeCom hands out its cached token until it expires,
    /// one per app secret of the corp.
    pub(crate) fn grant_wecom(
        &mut self,
        corpid: &str,
        corpsecret: &str,
        peer: Option<IpAddr>,
    ) -> Result<Grant, WxError> {
        self.check_wecom_app(corpid, corpsecret)?;
        self.check_ip(peer, AccountKind::Wecom)?;
        let day = self.clock.beijing_day();
        if !self
            .quotas
            .has_room(corpid, Counter::Wecom, day, self.config.daily_limit)
        {
            return Err(WxError::wecom(45009, "api freq out of limit"));
        }
        self.quotas.take(corpid, Counter::Wecom, day);
        let now = self.clock.now();
        let holder = Holder::wecom(corpid, corpsecret);
        match self.tokens.current(&holder, Family::Wecom, now) {
            Some((token, left)) => Ok(Grant {
                token,
                expires_in: left.as_secs(),
            }),
            None => Ok(self.mint(&holder, Family::Wecom)),
        }
    }

    /// WeCom's corpid-then-secret check: the account's own secret or any
    /// of the corp's agents' secrets.
    fn check_wecom_app(&self, corpid: &str, corpsecret: &str) -> Result<(), WxError> {
        let own = match self.accounts.get(corpid) {
            Some(a) if a.kind == AccountKind::Wecom => Some(a.secret.as_str()),
            _ => None,
        };
        let agents = self.wecom_agents.get(corpid);
        if own.is_none() && agents.is_none() {
            return Err(WxError::wecom(40013, "invalid corpid"));
        }
        if own == Some(corpsecret) || agents.is_some_and(|a| a.contains_key(corpsecret)) {
            Ok(())
        } else {
            Err(WxError::wecom(40001, "invalid credential"))
        }
    }

    /// Today's quota of `cgi_path` for `appid`: (daily limit, used), for
    /// `quota/get`. The token paths report their real counters, the
    /// ticket path the app's own tickets (every kind); other paths the
    /// simulator serves get a generous fixed limit, and a path it does not
    /// know `None` (WeChat's 76021).
    pub(crate) fn quota_of(&self, appid: &str, cgi_path: &str) -> Option<(u32, u32)> {
        let day = self.clock.beijing_day();
        let counter = |counter, limit| (limit, self.quotas.used(appid, counter, day));
        match cgi_path {
            "/cgi-bin/token" => Some(counter(Counter::Classic, self.config.daily_limit)),
            "/cgi-bin/stable_token" => Some(counter(Counter::Stable, STABLE_DAILY_LIMIT)),
            "/cgi-bin/ticket/getticket" => Some((
                self.config.ticket_daily_limit,
                self.tickets.daily_used(appid, day),
            )),
            _ if Endpoint::from_path(cgi_path).is_some() => Some((10_000_000, 0)),
            _ => None,
        }
    }

    /// The Beijing calendar month, `YYYYMM`, that `clear_quota` resets
    /// are counted in.
    pub(crate) fn beijing_month(&self) -> u32 {
        crate::clock::beijing_day(self.clock.unix_secs()) / 100
    }

    /// `clear_quota`: every daily count of `appid` back to zero, 10 times
    /// a month (48006 past that). Returns the resets used this month.
    pub(crate) fn clear_quota(&mut self, appid: &str) -> Result<u32, WxError> {
        let month = self.beijing_month();
        let used = self.quotas.clear(appid, month).ok_or_else(|| {
            info!(
                appid,
                "simulator refused clear_quota: monthly limit reached"
            );
            WxError::wechat(48006, "forbid to clear quota because of reaching the limit")
        })?;
        self.tickets.clear_daily(appid);
        info!(
            appid,
            resets_this_month = used,
            "simulator cleared the quota"
        );
        Ok(used)
    }

    /// `clear_quota` resets of `appid` this month.
    pub(crate) fn quota_resets(&self, appid: &str) -> u32 {
        self.quotas.resets(appid, self.beijing_month())
    }

    fn mint(&mut self, holder: &Holder, family: Family) -> Grant {
        let lifetime = self.config.token_lifetime;
        let token = self
            .tokens
            .issue(holder, family, self.clock.now(), lifetime);
        info!(
            appid = %holder.appid,
            ?family,
            token_fp = %fingerprint(&token),
            expires_in = lifetime.as_secs(),
            "simulator issued token"
        );
        Grant {
            token,
            expires_in: lifetime.as_secs(),
        }
    }

    /// WeChat's appid-then-secret check, shared by every call that carries
    /// the app's secret (token fetches, OAuth and Mini Program logins).
    pub(crate) fn check_wechat_account(&self, appid: &str, secret: &str) -> Result<(), WxError> {
        match self.accounts.get(appid) {
            Some(a) if a.kind == AccountKind::Wechat => {
                if a.secret == secret {
                    Ok(())
                } else {
                    Err(WxError::wechat(40125, "invalid appsecret"))
                }
            }
            // A WeCom corpid is as unknown to WeChat as a typo.
            _ => Err(WxError::wechat(40013, "invalid appid")),
        }
    }

    /// The whitelist applies to network callers only (`peer` is `None` for
    /// in-process calls).
    fn check_ip(&self, peer: Option<IpAddr>, kind: AccountKind) -> Result<(), WxError> {
        let (Some(whitelist), Some(peer)) = (&self.config.ip_whitelist, peer) else {
            return Ok(());
        };
        let peer = self.config.seen_ip.unwrap_or(peer).to_canonical();
        if whitelist.iter().any(|ip| ip.to_canonical() == peer) {
            return Ok(());
        }
        debug!(%peer, "simulator refused ip not in whitelist");
        Err(match kind {
            AccountKind::Wechat => {
                let v6 = match peer {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped().to_string(),
                    IpAddr::V6(v6) => v6.to_string(),
                };
                WxError::wechat(
                    40164,
                    &format!("invalid ip {peer} ipv6 {v6}, not in whitelist"),
                )
            }
            // WeCom's own code for the same condition.
            AccountKind::Wecom => WxError::wecom(
                60020,
                &format!("not allow to access from your ip, from ip: {peer}"),
            ),
        })
    }

    fn take_quota(&mut self, appid: &str, counter: Counter, limit: u32) -> Result<(), WxError> {
        let day = self.clock.beijing_day();
        if !self.quotas.has_room(appid, counter, day, limit) {
            return Err(quota_exhausted(appid));
        }
        self.quotas.take(appid, counter, day);
        Ok(())
    }
}

fn quota_exhausted(appid: &str) -> WxError {
    info!(appid, "simulator daily quota reached");
    WxError::from_code(45009)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn state(config: SimConfig) -> State {
        let mut state = State::new(config);
        state.add_account("wx1", "s", AccountKind::Wechat);
        state.add_account("ww1", "c", AccountKind::Wecom);
        state
    }

    #[test]
    fn classic_chain_keeps_only_the_previous_token() {
        let mut s = state(SimConfig::default());
        let a = s.grant_classic("wx1", "s", None).unwrap().token;
        let b = s.grant_classic("wx1", "s", None).unwrap().token;
        let c = s.grant_classic("wx1", "s", None).unwrap().token;
        assert_eq!(s.token_status(&a), TokenStatus::NotLatest);
        assert_eq!(s.token_status(&b), TokenStatus::Valid(Family::Classic));
        s.clock.advance(Duration::from_secs(301));
        assert_eq!(s.token_status(&b), TokenStatus::NotLatest);
        assert_eq!(s.token_status(&c), TokenStatus::Valid(Family::Classic));
    }

    #[test]
    fn whitelist_skips_in_process_calls_and_uses_each_products_code() {
        let mut s = state(SimConfig {
            ip_whitelist: Some(vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))]),
            ..SimConfig::default()
        });
        let outsider = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(s.grant_classic("wx1", "s", None).is_ok());
        assert_eq!(
            s.grant_classic("wx1", "s", outsider).unwrap_err().errcode,
            40164
        );
        assert_eq!(
            s.grant_wecom("ww1", "c", outsider).unwrap_err().errcode,
            60020
        );
        // An IPv4-mapped IPv6 peer is the same host.
        let mapped = Some(IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()));
        assert!(s.grant_classic("wx1", "s", mapped).is_ok());
    }

    #[test]
    fn the_whitelist_judges_and_names_the_seen_address() {
        let nat = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
        let mut s = state(SimConfig {
            ip_whitelist: Some(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
            seen_ip: Some(nat),
            ..SimConfig::default()
        });
        let local = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let refused = s.grant_classic("wx1", "s", local).unwrap_err();
        assert_eq!(refused.errcode, 40164);
        assert!(
            refused.errmsg.starts_with(
                "invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in whitelist rid: "
            ),
            "{}",
            refused.errmsg
        );
        s.config.ip_whitelist = Some(vec![nat]);
        assert!(s.grant_classic("wx1", "s", local).is_ok());
    }

    #[test]
    fn each_wecom_app_secret_has_its_own_token() {
        let mut s = state(SimConfig::default());
        s.add_wecom_agent("ww1", "agent-2", 1000002);
        let own = s.grant_wecom("ww1", "c", None).unwrap().token;
        let agent = s.grant_wecom("ww1", "agent-2", None).unwrap().token;
        assert_ne!(own, agent);
        assert_eq!(s.grant_wecom("ww1", "agent-2", None).unwrap().token, agent);
        let holder = s.tokens.holder(&agent).unwrap().clone();
        assert_eq!(holder, Holder::wecom("ww1", "agent-2"));
        assert_eq!(s.wecom_agentid(&holder), Some(1000002));
        assert_eq!(
            s.grant_wecom("ww1", "other", None).unwrap_err().errcode,
            40001
        );
        // A corp known only through its agents is a corp.
        s.add_wecom_agent("ww2", "x", 1);
        assert!(s.grant_wecom("ww2", "x", None).is_ok());
        assert_eq!(s.grant_wecom("ww3", "x", None).unwrap_err().errcode, 40013);
    }

    #[test]
    fn errors_do_not_spend_quota() {
        let mut s = state(SimConfig {
            daily_limit: 1,
            ..SimConfig::default()
        });
        assert_eq!(
            s.grant_classic("wx1", "bad", None).unwrap_err().errcode,
            40125
        );
        assert!(s.grant_classic("wx1", "s", None).is_ok());
        assert_eq!(
            s.grant_classic("wx1", "s", None).unwrap_err().errcode,
            45009
        );
    }
}
