//! When a refresher calls upstream next: pure functions of the held
//! credential's times, its kind, and the failure at hand, so every
//! deadline rule is tested without a clock. The scheduler of credentials
//! under one parent (`crate::children`) keeps its own due-time index but
//! takes its rules from here.

use std::time::Duration;

use crate::wechat::ErrorClass;

/// The shortest wait between two stable-grant asks that returned the
/// same token, so a misjudged rotation window can never become a spin.
pub(super) const STABLE_RECHECK_FLOOR: Duration = Duration::from_secs(2);
/// How long after the broker's expiry of a ticket it asks for the next.
/// The broker dates an expiry from when it sent the request, so upstream's
/// copy dies up to a round trip later, and asked before that it hands out
/// the dying ticket again (every broker of a fleet would then ask once
/// more). A second covers any sane round trip; readers wait that long for
/// the new ticket once a lifetime.
pub(super) const TICKET_EXPIRY_MARGIN: Duration = Duration::from_secs(1);
/// How long a configuration error holds the credential before the next
/// attempt.
pub(crate) const CONFIG_ERROR_HOLD: Duration = Duration::from_secs(600);

/// How a credential can be replaced before it dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// Asking early gets a new one (an access token): ask `refresh_before`
    /// ahead, so readers never see a gap.
    Ahead,
    /// Upstream answers with the held one until it dies (a ticket, DESIGN.md
    /// section 11): asking early only spends quota, and in a fleet every
    /// broker would ask. Ask once it has died upstream too.
    AtExpiry,
}

/// What upstream answers when asked for a credential while the held one
/// is still valid (DESIGN.md section 11): it decides when to ask, and
/// what an answer that repeats the held value means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reissue {
    /// A new value every time (a classic or WeCom access token, the
    /// component token): asked `refresh_before` ahead, and every answer
    /// is adopted.
    Fresh,
    /// The held value until its rotation window, a new one when forced
    /// (`stable_token`): asked ahead; a repeated answer keeps the held
    /// expiry, and a rejected value handed back is asked for once more
    /// with `force_refresh`.
    UntilForced,
    /// The held value until it dies (a JS-SDK ticket): asked once it has
    /// died upstream too; a repeated answer keeps the held expiry.
    UntilExpiry,
}

impl Reissue {
    /// When a credential of this kind is replaced.
    pub(crate) fn renewal(self) -> Renewal {
        match self {
            Reissue::Fresh | Reissue::UntilForced => Renewal::Ahead,
            Reissue::UntilExpiry => Renewal::AtExpiry,
        }
    }

    /// Whether upstream answers with the held value while it is valid.
    pub fn repeats_held(self) -> bool {
        match self {
            Reissue::Fresh => false,
            Reissue::UntilForced | Reissue::UntilExpiry => true,
        }
    }

    /// Whether a rejected value handed back again is asked for once more
    /// with `force_refresh`.
    pub fn can_force(self) -> bool {
        self == Reissue::UntilForced
    }
}

/// The unix millisecond a credential fetched at `fetched_at_ms`, dying at
/// `expires_at_ms`, is due for replacement. Ahead: `refresh_before` early,
/// but never earlier than half its life, so a `refresh_before` longer
/// than the lifetime upstream grants cannot become a refresh loop.
pub(crate) fn due_ms(
    renewal: Renewal,
    refresh_before: Duration,
    fetched_at_ms: u64,
    expires_at_ms: u64,
) -> u64 {
    match renewal {
        Renewal::AtExpiry => expires_at_ms.saturating_add(TICKET_EXPIRY_MARGIN.as_millis() as u64),
        Renewal::Ahead => {
            let lifetime = expires_at_ms.saturating_sub(fetched_at_ms);
            let lead = (refresh_before.as_millis() as u64).min(lifetime / 2);
            expires_at_ms.saturating_sub(lead)
        }
    }
}

/// Whether upstream granting `lifetime` is an anomaly (DESIGN.md section
/// 17): one no longer than `refresh_before` would be due for refresh at
/// once, or within half of a lifetime that may be a second. Such a
/// credential is served while it lives, and the next fetches are paced
/// by [`paced_due_ms`].
pub(crate) fn is_short_lifetime(lifetime: Duration, refresh_before: Duration) -> bool {
    lifetime <= refresh_before
}

/// When a credential granted a short lifetime is fetched next: at its own
/// due time, but never sooner than `pace` after `now_ms`, `pace` being the
/// error backoff's next step (1 s doubling to 60 s). However short the
/// lifetime, the fetches then slow down, never spin.
pub(crate) fn paced_due_ms(due_ms: u64, now_ms: u64, pace: Duration) -> u64 {
    let pace_ms = u64::try_from(pace.as_millis()).unwrap_or(u64::MAX);
    due_ms.max(now_ms.saturating_add(pace_ms))
}

/// How long to wait before asking again after upstream answered with the
/// credential already held, which has `left` to live: a stable token
/// after a quarter of it (its rotation window is near), never sooner than
/// the floor; a ticket once it has died upstream, so a second after it
/// dies here, or after the answer if it has.
pub(super) fn recheck_after(renewal: Renewal, left: Duration) -> Duration {
    match renewal {
        Renewal::Ahead => (left / 4).max(STABLE_RECHECK_FLOOR),
        Renewal::AtExpiry => left + TICKET_EXPIRY_MARGIN,
    }
}

/// Why an attempt failed, as far as the schedule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The day's budget is spent.
    BudgetSpent,
    /// Upstream refused or failed, classified by rule 5.
    Upstream(ErrorClass),
}

/// How long a failure holds the credential (DESIGN.md section 4, rule
/// 5): transient ones by the backoff's next delay, configuration errors
/// ten minutes, a spent budget or 45009 until Beijing midnight
/// (`until_midnight`).
pub(crate) fn failure_wait(
    failure: Failure,
    until_midnight: Duration,
    backoff: impl FnOnce() -> Duration,
) -> Duration {
    match failure {
        Failure::Upstream(ErrorClass::Retry) => backoff(),
        Failure::Upstream(ErrorClass::Config) => CONFIG_ERROR_HOLD,
        Failure::Upstream(ErrorClass::QuotaExhausted) | Failure::BudgetSpent => until_midnight,
    }
}

/// Whether a failure holds the credential until an operator or the next
/// day fixes it, so readers are answered at once instead of waiting.
pub(crate) fn holds(failure: Failure) -> bool {
    failure != Failure::Upstream(ErrorClass::Retry)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn tokens_are_due_refresh_before_ahead_but_not_before_half_their_life() {
        let due = |before, life_ms: u64| due_ms(Renewal::Ahead, before, 1_000, 1_000 + life_ms);
        assert_eq!(due(5 * MIN, 7_200_000), 1_000 + 6_900_000);
        // A refresh_before longer than half the lifetime: at half of it.
        assert_eq!(due(5 * MIN, 60_000), 1_000 + 30_000);
        assert_eq!(due(Duration::ZERO, 7_200_000), 1_000 + 7_200_000);
        // Nonsense times never underflow.
        assert_eq!(due_ms(Renewal::Ahead, 5 * MIN, 9_000, 1_000), 1_000);
    }

    #[test]
    fn a_short_lifetime_is_paced_by_the_backoff_not_by_itself() {
        let before = Duration::from_secs(8);
        assert!(is_short_lifetime(Duration::from_secs(2), before));
        assert!(is_short_lifetime(before, before));
        assert!(!is_short_lifetime(Duration::from_secs(9), before));
        let mut backoff = crate::engine::backoff::Backoff::default();
        let (mut now, mut fetches) = (0u64, Vec::new());
        // A 2 s token every time: fetched at 0, 1, 3, 7, 15 s, not every second.
        while now < 20_000 {
            fetches.push(now / 1000);
            let due = due_ms(Renewal::Ahead, before, now, now + 2_000);
            now = paced_due_ms(due, now, backoff.next_pace());
        }
        assert_eq!(fetches, [0, 1, 3, 7, 15]);
        assert_eq!(paced_due_ms(7_000, 0, Duration::from_secs(1)), 7_000);
    }

    #[test]
    fn tickets_are_due_when_they_die() {
        assert_eq!(Reissue::UntilExpiry.renewal(), Renewal::AtExpiry);
        assert_eq!(Reissue::Fresh.renewal(), Renewal::Ahead);
        assert_eq!(Reissue::UntilForced.renewal(), Renewal::Ahead);
        assert_eq!(
            due_ms(Renewal::AtExpiry, 5 * MIN, 1_000, 7_201_000),
            7_202_000
        );
    }

    #[test]
    fn a_repeated_answer_is_rechecked_never_in_a_spin() {
        assert_eq!(recheck_after(Renewal::Ahead, 20 * MIN), 5 * MIN);
        assert_eq!(
            recheck_after(Renewal::Ahead, Duration::ZERO),
            STABLE_RECHECK_FLOOR
        );
        assert_eq!(
            recheck_after(Renewal::AtExpiry, 20 * MIN),
            20 * MIN + TICKET_EXPIRY_MARGIN
        );
        assert_eq!(
            recheck_after(Renewal::AtExpiry, Duration::ZERO),
            TICKET_EXPIRY_MARGIN
        );
    }

    #[test]
    fn failures_wait_as_rule_five_says() {
        let midnight = Duration::from_secs(5 * 3600);
        let backoff = || Duration::from_secs(3);
        let wait = |failure| failure_wait(failure, midnight, backoff);
        assert_eq!(
            wait(Failure::Upstream(ErrorClass::Retry)),
            Duration::from_secs(3)
        );
        assert_eq!(
            wait(Failure::Upstream(ErrorClass::Config)),
            CONFIG_ERROR_HOLD
        );
        assert_eq!(
            wait(Failure::Upstream(ErrorClass::QuotaExhausted)),
            midnight
        );
        assert_eq!(wait(Failure::BudgetSpent), midnight);
        assert!(!holds(Failure::Upstream(ErrorClass::Retry)));
        assert!(holds(Failure::Upstream(ErrorClass::Config)));
        assert!(holds(Failure::BudgetSpent));
    }
}
