//! How a follower paces its watch of the leader (DESIGN.md sections 15
//! and 21), as pure policy: when the next watch may start, and what an
//! answer means. A real leader holds a watch until its credential changes
//! (or for the watch's whole length), so its answers are rare; a leader
//! that answers at once, with the same value or flipping between two,
//! must not make the follower spin, save or log at its pace.
//!
//! - A same-value answer is not a change: nothing is saved or logged.
//! - Watches start at least [`MIN_INTERVAL`] apart; an answer that came
//!   back sooner than that without a change (or a flip) doubles the
//!   interval, up to [`MAX_INTERVAL`]. A change, or a watch the leader
//!   really held, brings it back to [`MIN_INTERVAL`], so a real leader's
//!   new credential still reaches the follower within a second.
//! - A return to the value held just before the current one, within
//!   [`FLIP_WINDOW`], is a flip: two leaders that share no store answer
//!   behind one address. A real leader never goes back to an older value.

use std::time::Duration;

use tokio::time::Instant;

/// The shortest time between the starts of two watches.
pub(super) const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The longest, reached by doubling while the leader answers at once
/// with nothing new.
pub(super) const MAX_INTERVAL: Duration = Duration::from_secs(30);
/// How long a replaced value is remembered, to recognise a flip back to
/// it; also how long a flip episode lasts after its last flip.
pub(super) const FLIP_WINDOW: Duration = Duration::from_secs(600);

/// What one answer of the leader is, against the credential held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// The value held: not a change.
    Same,
    /// A value not seen lately: a change.
    New,
    /// The value held before the current one, again. `new_episode` when
    /// no flip was seen for [`FLIP_WINDOW`]: the one to log.
    Flip { new_episode: bool },
}

/// The watch's interval, doubled while answers bring nothing new.
#[derive(Debug)]
pub(super) struct WatchPace {
    interval: Duration,
}

impl Default for WatchPace {
    fn default() -> Self {
        WatchPace {
            interval: MIN_INTERVAL,
        }
    }
}

impl WatchPace {
    /// When the next watch may start, after the one that started at
    /// `started` was answered at `answered` with `seen`.
    pub(super) fn next(&mut self, started: Instant, answered: Instant, seen: Seen) -> Instant {
        let held = answered.saturating_duration_since(started) >= self.interval;
        self.interval = match seen {
            Seen::New => MIN_INTERVAL,
            Seen::Same if held => MIN_INTERVAL,
            Seen::Same | Seen::Flip { .. } => (self.interval * 2).min(MAX_INTERVAL),
        };
        started + self.interval
    }
}

/// Remembers the value replaced last, to tell a flip from a change.
#[derive(Debug, Default)]
pub(super) struct FlipWatch {
    /// The version held before the current one, and when it was replaced.
    previous: Option<(String, Instant)>,
    /// The last flip seen, for logging once per episode.
    last_flip: Option<Instant>,
}

impl FlipWatch {
    /// What `answered` (a version) is, the follower holding `held`, at
    /// `now`; remembers what it replaces.
    pub(super) fn classify(&mut self, held: Option<&str>, answered: &str, now: Instant) -> Seen {
        if held == Some(answered) {
            return Seen::Same;
        }
        let flipped_back = self.previous.as_ref().is_some_and(|(version, replaced)| {
            version == answered && now.saturating_duration_since(*replaced) < FLIP_WINDOW
        });
        self.previous = held.map(|version| (version.to_owned(), now));
        if !flipped_back {
            return Seen::New;
        }
        let new_episode = self
            .last_flip
            .is_none_or(|last| now.saturating_duration_since(last) >= FLIP_WINDOW);
        self.last_flip = Some(now);
        Seen::Flip { new_episode }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_answering_at_once_with_the_same_value_is_asked_ever_less_often() {
        let mut pace = WatchPace::default();
        let mut at = Instant::now();
        let start = at;
        let mut watches = 0;
        while at < start + Duration::from_secs(60) {
            watches += 1;
            at = pace.next(at, at, Seen::Same);
        }
        // 1, 2, 4, 8, 16, then every 30 s.
        assert!(watches <= 7, "{watches} watches in a minute");
        assert_eq!(pace.interval, MAX_INTERVAL);
    }

    #[test]
    fn a_held_watch_or_a_change_brings_the_interval_back() {
        let mut pace = WatchPace::default();
        let start = Instant::now();
        let next = pace.next(start, start, Seen::Same);
        assert_eq!(next, start + Duration::from_secs(2));
        // The leader held the next watch for 25 s: it is a real leader.
        let answered = next + Duration::from_secs(25);
        assert_eq!(pace.next(next, answered, Seen::Same), next + MIN_INTERVAL);
        let next = pace.next(answered, answered, Seen::Flip { new_episode: true });
        assert_eq!(next, answered + Duration::from_secs(2));
        // A new value answered at once is a change: at most a second on.
        assert_eq!(pace.next(next, next, Seen::New), next + MIN_INTERVAL);
    }

    #[test]
    fn a_return_to_the_value_before_is_a_flip_logged_once_per_episode() {
        let mut flips = FlipWatch::default();
        let now = Instant::now();
        assert_eq!(flips.classify(None, "a", now), Seen::New);
        assert_eq!(flips.classify(Some("a"), "a", now), Seen::Same);
        assert_eq!(flips.classify(Some("a"), "b", now), Seen::New);
        assert_eq!(
            flips.classify(Some("b"), "a", now),
            Seen::Flip { new_episode: true }
        );
        assert_eq!(
            flips.classify(Some("a"), "b", now),
            Seen::Flip { new_episode: false }
        );
        // A real rotation after the flips is a change, not a flip.
        assert_eq!(flips.classify(Some("b"), "c", now), Seen::New);
        // Long after the last flip, another one starts a new episode.
        let later = now + FLIP_WINDOW;
        assert_eq!(flips.classify(Some("c"), "d", later), Seen::New);
        assert_eq!(
            flips.classify(Some("d"), "c", later),
            Seen::Flip { new_episode: true }
        );
    }

    #[test]
    fn a_value_replaced_long_ago_coming_back_is_not_a_flip() {
        let mut flips = FlipWatch::default();
        let now = Instant::now();
        flips.classify(Some("a"), "b", now);
        assert_eq!(flips.classify(Some("b"), "a", now + FLIP_WINDOW), Seen::New);
    }
}
