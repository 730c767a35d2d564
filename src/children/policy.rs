//! The engine's rules 5 and 6 for one child: what a failed fetch means
//! (its class, as the engine classifies it, with the kind's own errcodes
//! that need the child's owner), how long it holds the child, how it is
//! counted, and the parent's daily budget of fetches.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tracing::{error, warn};

use super::record::ChildStore;
use super::source::ChildSource;
use super::table::Hold;
use crate::clock::beijing_day;
use crate::engine::schedule::Failure;
use crate::engine::DailyBudget;
use crate::errors::Chain;
use crate::wechat::{self, ErrorClass, FetchError};

/// Why one child's fetch failed.
#[derive(Debug)]
pub enum Failed {
    Upstream(FetchError),
    /// The parent's daily budget is spent: no call was made.
    BudgetSpent,
}

/// Every `result` label of a family's fetch counter: "ok", then those of
/// [`Failed::result_label`].
pub const RESULT_LABELS: [&str; 6] = ["ok", "errcode", "config", "quota", "transport", "budget"];

/// The class of a child fetch's failure. Errcodes the kind says need the
/// child's owner (61023, a dead refresh token) are configuration errors,
/// first: the kind knows what its endpoint means by them. A rejected
/// parent token (40001, 40014, 42001) is transient for the child: the
/// parent's refresher replaces it. The rest is the engine's
/// classification.
pub fn class_of(err: &FetchError, source: &dyn ChildSource) -> ErrorClass {
    match err {
        FetchError::Api { errcode, .. }
            if *errcode != wechat::QUOTA_ERRCODE && source.config_fix(*errcode).is_some() =>
        {
            ErrorClass::Config
        }
        FetchError::Api { errcode, .. } if wechat::is_token_rejected(*errcode) => ErrorClass::Retry,
        other => other.class(),
    }
}

/// What an operator (or the child's owner) should do about `err`.
pub fn fix_of(err: &FetchError, source: &dyn ChildSource) -> Option<&'static str> {
    err.errcode()
        .and_then(|code| source.config_fix(code))
        .or_else(|| err.fix())
}

impl Failed {
    /// The engine's view of the failure, for `schedule::failure_wait`.
    pub(crate) fn failure(&self, source: &dyn ChildSource) -> Failure {
        match self {
            Failed::BudgetSpent => Failure::BudgetSpent,
            Failed::Upstream(err) => Failure::Upstream(class_of(err, source)),
        }
    }

    /// What holds the child after this failure.
    pub fn hold(&self, source: &dyn ChildSource) -> Hold {
        match self.failure(source) {
            Failure::BudgetSpent => Hold::Budget,
            Failure::Upstream(ErrorClass::Config) => Hold::Config,
            Failure::Upstream(ErrorClass::QuotaExhausted) => Hold::Quota,
            Failure::Upstream(ErrorClass::Retry) => Hold::None,
        }
    }

    /// The `result` label: an errcode answer by its class.
    pub fn result_label(&self, source: &dyn ChildSource) -> &'static str {
        match self {
            Failed::BudgetSpent => "budget",
            Failed::Upstream(err @ FetchError::Api { .. }) => match class_of(err, source) {
                ErrorClass::Retry => "errcode",
                ErrorClass::Config => "config",
                ErrorClass::QuotaExhausted => "quota",
            },
            Failed::Upstream(_) => "transport",
        }
    }
}

/// The parent's daily budget of child fetches (rule 6), counted per
/// Beijing day on the store, so the count survives restarts and, in a
/// shared store, is the fleet's. Shared by the fetches in flight.
pub struct FetchBudget {
    /// The configuration key, for the log line.
    key: String,
    store: Arc<dyn ChildStore>,
    state: Mutex<BudgetState>,
}

struct BudgetState {
    budget: DailyBudget,
    /// The day the spent budget was last logged: once a day, not once per
    /// child refused.
    logged_day: u32,
}

impl FetchBudget {
    pub fn new(limit: u32, key: String, store: Arc<dyn ChildStore>, now_secs: u64) -> Self {
        FetchBudget {
            key,
            store,
            state: Mutex::new(BudgetState {
                budget: DailyBudget::new(limit, now_secs),
                logged_day: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes over today's count from the store (a restart, or the fleet).
    pub async fn restore(&self, now_secs: u64) {
        let day = beijing_day(now_secs);
        match self.store.fetches(day).await {
            Ok(count) => {
                let mut state = self.state();
                state.budget.roll(now_secs);
                state.budget.at_least(day, count);
            }
            Err(err) => {
                warn!(error = %Chain(&err), "cannot read the day's count of fetches; counting from this broker's own")
            }
        }
    }

    /// Counts one fetch, or refuses it when the day's budget is spent.
    /// Counted on the store before the call is made: a crash right after
    /// must not hand the next start an unspent budget. A store that
    /// cannot count leaves this broker's own count in charge.
    pub async fn spend(&self, now_secs: u64) -> bool {
        let day = {
            let mut state = self.state();
            state.budget.roll(now_secs);
            if state.budget.used() >= state.budget.limit() {
                return self.refused(&mut state);
            }
            state.budget.day()
        };
        let counted = self.store.count_fetch(day).await;
        let mut state = self.state();
        let allowed = match counted {
            Ok(count) => {
                state.budget.at_least(day, count);
                count <= state.budget.limit()
            }
            Err(err) => {
                warn!(error = %Chain(&err), "cannot count a fetch on the store; counting on this broker's own");
                state.budget.try_spend(now_secs)
            }
        };
        allowed || self.refused(&mut state)
    }

    fn refused(&self, state: &mut BudgetState) -> bool {
        let day = state.budget.day();
        if state.logged_day != day {
            state.logged_day = day;
            error!(
                budget = state.budget.limit(),
                "{} spent: no fetch until Beijing midnight; held tokens are served while valid; raise {} if this is expected",
                self.key, self.key
            );
        }
        false
    }

    /// Fetches counted today, as far as this broker knows.
    pub fn used(&self) -> u32 {
        self.state().budget.used()
    }
}

/// How long after the first line about an errcode the next one is
/// logged with its child: ten thousand children refused for one cause
/// (the platform's address not whitelisted) make a line a minute, not
/// ten thousand.
const LOG_WINDOW: Duration = Duration::from_secs(60);

/// Rate-limits failure lines per cause; counts the ones left out.
#[derive(Default)]
pub struct LogGate {
    /// Per cause (an errcode or a label): when it was last logged and how
    /// many were left out since.
    causes: std::collections::HashMap<String, (u64, u32)>,
}

impl LogGate {
    /// Whether to log a failure of `cause` at `now_ms`; when it is,
    /// also how many of that cause were left out since the last line.
    pub fn admit(&mut self, cause: &str, now_ms: u64) -> Option<u32> {
        let window = LOG_WINDOW.as_millis() as u64;
        match self.causes.get_mut(cause) {
            Some((last, left_out)) if now_ms.saturating_sub(*last) < window => {
                *left_out += 1;
                None
            }
            Some((last, left_out)) => {
                *last = now_ms;
                Some(std::mem::take(left_out))
            }
            None => {
                // Bounded: causes are errcodes WeChat answered, and a
                // hostile upstream inventing new ones gets "other".
                if self.causes.len() >= 64 {
                    self.causes.clear();
                }
                self.causes.insert(cause.to_owned(), (now_ms, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::source::{ChildGrant, ChildPage};
    use crate::secret::AccessToken;
    use futures_util::future::BoxFuture;

    struct Refreshing;

    /// Only its classification is asked for; every call fails.
    impl ChildSource for Refreshing {
        fn parent_token(&self) -> BoxFuture<'_, Result<AccessToken, FetchError>> {
            Box::pin(async { Err(FetchError::Http(500)) })
        }
        fn parent_rejected<'a>(&'a self, _: &'a AccessToken) -> BoxFuture<'a, ()> {
            Box::pin(async {})
        }
        fn fetch<'a>(
            &'a self,
            _: &'a AccessToken,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<ChildGrant, FetchError>> {
            Box::pin(async { Err(FetchError::Http(500)) })
        }
        fn exchange<'a>(
            &'a self,
            _: &'a AccessToken,
            _: &'a str,
        ) -> BoxFuture<'a, Result<ChildGrant, FetchError>> {
            Box::pin(async { Err(FetchError::Http(500)) })
        }
        fn list<'a>(
            &'a self,
            _: &'a AccessToken,
            _: u64,
        ) -> BoxFuture<'a, Result<ChildPage, FetchError>> {
            Box::pin(async { Err(FetchError::Http(500)) })
        }
        fn config_fix(&self, errcode: i64) -> Option<&'static str> {
            (errcode == 61023).then_some("the merchant must authorize again")
        }
    }

    fn api(errcode: i64) -> FetchError {
        FetchError::Api {
            errcode,
            errmsg: String::new(),
        }
    }

    #[test]
    fn child_failures_are_classified_as_the_engine_does_plus_the_kinds_own() {
        let source = Refreshing;
        let class = |err: &FetchError| class_of(err, &source);
        assert_eq!(class(&api(61023)), ErrorClass::Config);
        assert_eq!(class(&api(40013)), ErrorClass::Config, "the engine's");
        assert_eq!(class(&api(41004)), ErrorClass::Config, "the engine's");
        assert_eq!(class(&api(45009)), ErrorClass::QuotaExhausted);
        assert_eq!(class(&api(-1)), ErrorClass::Retry);
        // The parent's token rejected: its refresher fixes that.
        assert_eq!(class(&api(40001)), ErrorClass::Retry);
        assert_eq!(class(&FetchError::Http(502)), ErrorClass::Retry);
        assert_eq!(
            fix_of(&api(61023), &source),
            Some("the merchant must authorize again")
        );
        assert!(fix_of(&api(40164), &source).is_some(), "the engine's fix");
        let label = |failed: Failed| failed.result_label(&source);
        assert_eq!(label(Failed::Upstream(api(61023))), "config");
        assert_eq!(label(Failed::Upstream(api(45009))), "quota");
        assert_eq!(label(Failed::Upstream(api(-1))), "errcode");
        assert_eq!(label(Failed::Upstream(FetchError::Http(502))), "transport");
        assert_eq!(label(Failed::BudgetSpent), "budget");
        assert_eq!(Failed::Upstream(api(45009)).hold(&source), Hold::Quota);
        assert_eq!(Failed::Upstream(api(61023)).hold(&source), Hold::Config);
        assert_eq!(Failed::Upstream(api(-1)).hold(&source), Hold::None);
    }

    #[test]
    fn the_log_gate_lets_one_line_a_minute_per_cause() {
        let mut gate = LogGate::default();
        assert_eq!(gate.admit("61004", 0), Some(0));
        assert_eq!(gate.admit("61023", 1), Some(0), "another cause");
        assert_eq!(gate.admit("61004", 10_000), None);
        assert_eq!(gate.admit("61004", 59_999), None);
        assert_eq!(gate.admit("61004", 60_000), Some(2));
        assert_eq!(gate.admit("61004", 60_001), None);
    }
}
