//! A reported rejection of the held token (rule 4): compare-and-refresh
//! within `min_forced_interval`, a refresh deferred when that forbids one
//! now, and the token fights a rejection reveals (a token this broker
//! fetched and did not replace, rejected upstream), logged once per
//! episode.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::coordination::{Coordination, Turn};
use super::{Refresher, LOG_TARGET};
use crate::engine::InvalidateOutcome;
use crate::secret::AccessToken;

/// A fight is logged once per episode: again only after this long
/// without one.
const FIGHT_EPISODE_GAP: Duration = Duration::from_secs(600);

/// Who saw a token rejected upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SeenBy {
    /// A client's report (an invalidation).
    Client,
    /// The refresher's periodic check.
    Check,
    /// The refresher's check after a fetch that timed out.
    CheckAfterTimeout,
    /// A rejection seen (and counted) before, whose refresh was deferred.
    Deferred,
}

impl SeenBy {
    fn describe(self) -> &'static str {
        match self {
            SeenBy::Client => "a client's report",
            SeenBy::Check => "the broker's own check",
            SeenBy::CheckAfterTimeout => "the broker's own check after a fetch that timed out",
            SeenBy::Deferred => "an earlier rejection",
        }
    }
}

/// The deadline of a deferred refresh, or never.
pub(super) async fn deferred_due(deferred: &Option<(AccessToken, Instant)>) {
    match deferred {
        Some((_, at)) => tokio::time::sleep_until(*at).await,
        None => std::future::pending().await,
    }
}

impl Refresher {
    /// Rule 4: refresh only if `reported` is still current and the last
    /// refresh is older than `min_forced_interval`.
    pub(super) async fn invalidate(
        &mut self,
        coordination: &mut dyn Coordination,
        reported: &AccessToken,
        defer: bool,
        seen_by: SeenBy,
    ) -> InvalidateOutcome {
        let outcome = self
            .try_invalidate(coordination, reported, defer, seen_by)
            .await;
        self.series.count_forced_refresh(outcome.metric_label());
        outcome
    }

    async fn try_invalidate(
        &mut self,
        coordination: &mut dyn Coordination,
        reported: &AccessToken,
        defer: bool,
        seen_by: SeenBy,
    ) -> InvalidateOutcome {
        let Some(current) = self.current().filter(|token| token.value == *reported) else {
            return InvalidateOutcome::AlreadyRotated;
        };
        let now = Instant::now();
        let interval = self.spec.min_forced_interval;
        let fetched_ago =
            Duration::from_millis(self.now_ms().saturating_sub(current.fetched_at_ms));
        // A client's report of an older token may have other causes, so
        // it is a fight only within the kind's fight window (WeChat's
        // overlap). The broker's own check asks about the token it holds
        // and did not supersede: its rejection is a fight at any age.
        let fight = match seen_by {
            SeenBy::Client => self
                .spec
                .fight_window
                .is_some_and(|window| fetched_ago < window),
            SeenBy::Check | SeenBy::CheckAfterTimeout => self.spec.fight_window.is_some(),
            // Counted when it was seen.
            SeenBy::Deferred => false,
        };
        if fight {
            self.count_fight(reported, fetched_ago, seen_by);
        }
        // The earliest moment rule 4 allows a refresh of this token.
        let allowed_at = [
            Some(now + interval.saturating_sub(fetched_ago)),
            self.last_forced.map(|at| at + interval),
            self.hold_until,
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(now);
        if allowed_at > now {
            if !defer {
                return InvalidateOutcome::RateLimited;
            }
            return self.defer_refresh(reported, allowed_at);
        }
        let pass = match coordination.take_turn(self, Some(reported)).await {
            Turn::Mine(pass) => pass,
            Turn::Settled => return InvalidateOutcome::AlreadyRotated,
            Turn::Later => return InvalidateOutcome::RateLimited,
        };
        self.last_forced = Some(now);
        info!(target: LOG_TARGET, token = %reported.fingerprint(), "token reported rejected; refreshing");
        let result = match self.attempt(coordination, false).await {
            // A stable-grant ask that hands back the rejected token again
            // means WeChat has not rotated it: only then force (20 a day).
            Ok((grant, _)) if self.spec.reissue.can_force() && grant.token == *reported => {
                self.attempt(coordination, true).await
            }
            other => other,
        };
        let outcome = match result {
            // A ticket endpoint answers with the held ticket while it is
            // valid upstream: there is no newer one to be had.
            Ok((grant, sent_at)) if grant.token == *reported => {
                self.keep_held(grant, sent_at);
                InvalidateOutcome::Unchanged
            }
            Ok((grant, sent_at)) => {
                self.adopt(grant, sent_at);
                InvalidateOutcome::Refreshed
            }
            Err(err) => {
                self.on_failure(err);
                InvalidateOutcome::Failed
            }
        };
        let fetched = outcome == InvalidateOutcome::Refreshed;
        coordination.end_turn(self, pass, fetched).await;
        outcome
    }

    /// Schedules one refresh of `reported` at `at`, merged with any other
    /// already scheduled: callers that saw a rejection were told to retry
    /// then, and nobody else would ask for it.
    fn defer_refresh(&mut self, reported: &AccessToken, at: Instant) -> InvalidateOutcome {
        let at = match &self.deferred {
            Some((_, scheduled)) => (*scheduled).min(at),
            None => {
                warn!(
                    target: LOG_TARGET,
                    token = %reported.fingerprint(),
                    refresh_in = ?at.saturating_duration_since(Instant::now()),
                    "token rejected upstream but min_forced_interval forbids a refresh now; deferred"
                );
                at
            }
        };
        self.deferred = Some((reported.clone(), at));
        let at_secs = self.now_secs()
            + at.saturating_duration_since(Instant::now())
                .as_secs()
                .max(1);
        self.publish(|view| view.deferred_refresh_at = Some(at_secs));
        InvalidateOutcome::Deferred
    }

    /// A rejection of a token younger than WeChat's overlap, which this
    /// broker did not replace: something else fetches tokens for this
    /// appid (another environment, a fleet with another key prefix).
    pub(super) fn count_fight(&mut self, reported: &AccessToken, age: Duration, seen_by: SeenBy) {
        self.series.count_fight();
        let now = Instant::now();
        let new_episode = self
            .last_fight
            .is_none_or(|last| now.duration_since(last) >= FIGHT_EPISODE_GAP);
        self.last_fight = Some(now);
        if new_episode {
            error!(
                target: LOG_TARGET,
                appid = %self.key.appid,
                token = %reported.fingerprint(),
                token_age = ?age,
                seen_by = seen_by.describe(),
                "token fight: WeChat rejected a token this broker fetched {}s ago and has not replaced (seen by {}); something else is fetching tokens for this appid (another environment or broker sharing the secret, a fleet with another key_prefix, or a fetch of this broker's that timed out yet was carried out). Make it read from this broker",
                age.as_secs(),
                seen_by.describe()
            );
        }
    }
}
