//! The JS-SDK ticket book: every ticket the simulator ever issued, which
//! one is current per owner and kind, and the daily and hourly call
//! counters of the ticket endpoints. It keeps WeChat's one quirk: asking
//! again while a ticket is valid answers the SAME ticket with `expires_in`
//! reset to the full lifetime, while the ticket still dies at its first
//! issue plus that lifetime. A ticket lives on its own clock: a new app
//! token neither renews nor kills it. The HTTP side is `ticket_api.rs`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::clock::SimTime;
use super::users::random_id;

/// The window WeCom's ticket limits count calls in.
const HOUR: Duration = Duration::from_secs(3600);

/// The ticket kinds are the broker's own ([`TicketKind::Jsapi`] is, for a
/// WeCom corp, the corp's ticket of `get_jsapi_ticket`).
pub use crate::credential::TicketKind;

/// Whose ticket: an app's or a corp's for `jsapi` and `wx_card`, one WeCom
/// agent's (named by its secret) for `agent_config`. Also the key the
/// call counters use.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TicketKey {
    pub owner: String,
    pub kind: TicketKind,
    pub agent: Option<String>,
}

impl TicketKey {
    pub(crate) fn new(owner: &str, kind: TicketKind, agent: Option<&str>) -> Self {
        TicketKey {
            owner: owner.to_owned(),
            kind,
            agent: agent.map(str::to_owned),
        }
    }
}

#[derive(Debug)]
struct Record {
    owner: String,
    kind: TicketKind,
    expires_at: SimTime,
}

/// A ticket answer: `expires_in` is what WeChat says, not what is left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TicketGrant {
    pub ticket: String,
    pub expires_in: u64,
    /// False when the answer repeats a ticket still valid.
    pub fresh: bool,
}

/// A limit a ticket call is counted against.
#[derive(Clone, Debug)]
pub(crate) enum Limit {
    /// Calls per Beijing day for `key`.
    Daily { key: TicketKey, limit: u32 },
    /// Calls in the last hour for `key`.
    Hourly { key: TicketKey, limit: u32 },
}

#[derive(Debug, Default)]
pub(crate) struct TicketBook {
    records: HashMap<String, Record>,
    current: HashMap<TicketKey, String>,
    /// key -> (Beijing day, calls that day)
    daily: HashMap<TicketKey, (u64, u32)>,
    /// key -> times of the calls of the last hour, oldest first
    hourly: HashMap<TicketKey, VecDeque<SimTime>>,
}

impl TicketBook {
    /// Counts one call against every limit, or none when any is reached
    /// (a refused call spends nothing). Returns the limit reached.
    pub(crate) fn admit(&mut self, limits: &[Limit], day: u64, now: SimTime) -> Result<(), Limit> {
        for limit in limits {
            let used = match limit {
                Limit::Daily { key, .. } => match self.daily.get(key) {
                    Some(&(d, n)) if d == day => n,
                    _ => 0,
                },
                Limit::Hourly { key, .. } => {
                    let calls = self.hourly.entry(key.clone()).or_default();
                    while calls.front().is_some_and(|&t| t + HOUR <= now) {
                        calls.pop_front();
                    }
                    u32::try_from(calls.len()).unwrap_or(u32::MAX)
                }
            };
            let (Limit::Daily { limit: max, .. } | Limit::Hourly { limit: max, .. }) = limit;
            if used >= *max {
                return Err(limit.clone());
            }
        }
        for limit in limits {
            match limit {
                Limit::Daily { key, .. } => {
                    let entry = self.daily.entry(key.clone()).or_insert((day, 0));
                    if entry.0 != day {
                        *entry = (day, 0);
                    }
                    entry.1 += 1;
                }
                Limit::Hourly { key, .. } => {
                    self.hourly.entry(key.clone()).or_default().push_back(now)
                }
            }
        }
        Ok(())
    }

    /// Calls of `owner`'s own (not per-agent) tickets on Beijing `day`,
    /// every kind together: what `quota/get` reports for `getticket`.
    pub(crate) fn daily_used(&self, owner: &str, day: u64) -> u32 {
        self.daily
            .iter()
            .filter(|(key, (d, _))| key.owner == owner && key.agent.is_none() && *d == day)
            .map(|(_, (_, n))| *n)
            .sum()
    }

    /// Forgets `owner`'s daily counts: `clear_quota` resets every API
    /// quota of the account.
    pub(crate) fn clear_daily(&mut self, owner: &str) {
        self.daily.retain(|key, _| key.owner != owner);
    }

    /// The current ticket of `key` while it is valid (with `expires_in`
    /// reset to `lifetime`, its true expiry unchanged), else a new one.
    pub(crate) fn grant(
        &mut self,
        key: &TicketKey,
        now: SimTime,
        lifetime: Duration,
    ) -> TicketGrant {
        if let Some(ticket) = self.current.get(key) {
            if self.records.get(ticket).is_some_and(|r| now < r.expires_at) {
                return TicketGrant {
                    ticket: ticket.clone(),
                    expires_in: lifetime.as_secs(),
                    fresh: false,
                };
            }
        }
        let ticket = loop {
            let candidate = random_id(86);
            if !self.records.contains_key(&candidate) {
                break candidate;
            }
        };
        self.records.insert(
            ticket.clone(),
            Record {
                owner: key.owner.clone(),
                kind: key.kind,
                expires_at: now + lifetime,
            },
        );
        self.current.insert(key.clone(), ticket.clone());
        TicketGrant {
            ticket,
            expires_in: lifetime.as_secs(),
            fresh: true,
        }
    }

    /// Whether `ticket` is a `kind` ticket of `owner` that is valid at `now`.
    pub(crate) fn valid(&self, owner: &str, kind: TicketKind, ticket: &str, now: SimTime) -> bool {
        self.records
            .get(ticket)
            .is_some_and(|r| r.owner == owner && r.kind == kind && now < r.expires_at)
    }

    pub(crate) fn ever_issued(&self, ticket: &str) -> bool {
        self.records.contains_key(ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFE: Duration = Duration::from_secs(7200);

    fn at(secs: u64) -> SimTime {
        Duration::from_secs(secs)
    }

    #[test]
    fn same_ticket_keeps_its_first_expiry() {
        let mut book = TicketBook::default();
        let key = TicketKey::new("wx1", TicketKind::Jsapi, None);
        let first = book.grant(&key, at(0), LIFE);
        assert!(first.fresh && first.ticket.len() == 86);
        let again = book.grant(&key, at(7000), LIFE);
        assert_eq!(
            (again.ticket.as_str(), again.expires_in, again.fresh),
            (first.ticket.as_str(), 7200, false)
        );
        assert!(book.valid("wx1", TicketKind::Jsapi, &first.ticket, at(7199)));
        assert!(!book.valid("wx1", TicketKind::Jsapi, &first.ticket, at(7200)));
        assert!(!book.valid("wx1", TicketKind::WxCard, &first.ticket, at(0)));
        assert!(!book.valid("wx2", TicketKind::Jsapi, &first.ticket, at(0)));
        let next = book.grant(&key, at(7200), LIFE);
        assert!(next.fresh && next.ticket != first.ticket);
        assert!(book.ever_issued(&first.ticket));
    }

    #[test]
    fn hourly_windows_slide_and_refusals_spend_nothing() {
        let mut book = TicketBook::default();
        let corp = TicketKey::new("ww1", TicketKind::Jsapi, None);
        let agent = TicketKey::new("ww1", TicketKind::Jsapi, Some("a"));
        let limits = [
            Limit::Hourly {
                key: corp.clone(),
                limit: 3,
            },
            Limit::Hourly {
                key: agent,
                limit: 2,
            },
        ];
        assert!(book.admit(&limits, 1, at(0)).is_ok());
        assert!(book.admit(&limits, 1, at(10)).is_ok());
        assert!(matches!(
            book.admit(&limits, 1, at(20)),
            Err(Limit::Hourly { limit: 2, .. })
        ));
        // The refused call was not counted against the corp.
        let corp_only = [Limit::Hourly {
            key: corp,
            limit: 3,
        }];
        assert!(book.admit(&corp_only, 1, at(20)).is_ok());
        assert!(book.admit(&corp_only, 1, at(30)).is_err());
        // The corp's first call leaves the window an hour after it was made.
        assert!(book.admit(&limits, 1, at(3599)).is_err());
        assert!(book.admit(&limits, 1, at(3600)).is_ok());
    }

    #[test]
    fn daily_counts_reset_on_a_new_day() {
        let mut book = TicketBook::default();
        let limits = [Limit::Daily {
            key: TicketKey::new("wx1", TicketKind::WxCard, None),
            limit: 1,
        }];
        assert!(book.admit(&limits, 1, at(0)).is_ok());
        assert!(book.admit(&limits, 1, at(1)).is_err());
        assert!(book.admit(&limits, 2, at(2)).is_ok());
    }
}
