//! The `suite_ticket` rule. WeCom pushes a ticket about every 10 minutes,
//! each valid 30 minutes, stamped with the time it was issued, and offers
//! no API to push one again; pushes arrive out of order (a retried older
//! push after a newer one), so the ticket kept is the one with the newest
//! `TimeStamp`, never the last to arrive.
//!
//! [`judge`] is the whole rule as a pure function of the held ticket, the
//! pushed one and the time, so a single broker and a fleet (each member
//! judging against the shared store) keep the same ticket whatever order
//! the pushes reach them in.

use crate::secret::Secret;

/// How long WeCom accepts a `suite_ticket` after issuing it.
pub const TICKET_LIFETIME_SECS: u64 = 30 * 60;

/// A pushed `TimeStamp` further than this ahead of the broker's clock is
/// not believed: kept, it would outrank every real push after it and pin
/// a ticket that dies in 30 minutes.
pub const FUTURE_SLACK_SECS: u64 = 5 * 60;

/// A `suite_ticket` as WeCom pushed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedTicket {
    pub ticket: Secret,
    /// `TimeStamp`: Unix seconds when WeCom issued it.
    pub timestamp: u64,
}

/// What to do with a pushed ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketDecision {
    /// The pushed ticket is the newest: keep it instead.
    Replace,
    /// The held ticket is this one already.
    Same,
    /// The held ticket is newer: keep it.
    Older,
    /// The pushed ticket is past its 30 minutes already.
    Expired,
    /// The pushed `TimeStamp` is implausibly far in the future.
    Future,
}

impl TicketDecision {
    /// Whether the pushed ticket is to be kept.
    pub fn keeps_pushed(self) -> bool {
        self == TicketDecision::Replace
    }

    /// For logs and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            TicketDecision::Replace => "newer",
            TicketDecision::Same => "same",
            TicketDecision::Older => "older",
            TicketDecision::Expired => "expired",
            TicketDecision::Future => "future",
        }
    }
}

/// Judges `pushed` against the `held` ticket at `now_secs` (Unix).
///
/// The newest `TimeStamp` wins. Two different tickets with the same
/// `TimeStamp` are ordered by their text, so every member of a fleet
/// settles on the same one whatever order they arrive in. A held ticket
/// stamped beyond the future slack (written by a host whose clock was
/// wrong) yields to any plausible push.
pub fn judge(held: Option<&PushedTicket>, pushed: &PushedTicket, now_secs: u64) -> TicketDecision {
    let horizon = now_secs.saturating_add(FUTURE_SLACK_SECS);
    if pushed.timestamp > horizon {
        return TicketDecision::Future;
    }
    if pushed.timestamp.saturating_add(TICKET_LIFETIME_SECS) <= now_secs {
        return TicketDecision::Expired;
    }
    let Some(held) = held else {
        return TicketDecision::Replace;
    };
    if held.ticket == pushed.ticket {
        return TicketDecision::Same;
    }
    if held.timestamp > horizon {
        return TicketDecision::Replace;
    }
    let newer = (pushed.timestamp, pushed.ticket.expose()) > (held.timestamp, held.ticket.expose());
    if newer {
        TicketDecision::Replace
    } else {
        TicketDecision::Older
    }
}

/// Seconds since WeCom issued `held`, for the age gauge and its alert.
pub fn age_secs(held: &PushedTicket, now_secs: u64) -> u64 {
    now_secs.saturating_sub(held.timestamp)
}

/// Whether `held` may still fetch a suite token at `now_secs`.
pub fn is_usable(held: &PushedTicket, now_secs: u64) -> bool {
    held.timestamp.saturating_add(TICKET_LIFETIME_SECS) > now_secs
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn ticket(text: &str, timestamp: u64) -> PushedTicket {
        PushedTicket {
            ticket: Secret::new(text),
            timestamp,
        }
    }

    #[test]
    fn the_newest_timestamp_wins_and_an_older_push_never_replaces_it() {
        let newer = ticket("b", NOW - 10);
        let older = ticket("a", NOW - 600);
        assert_eq!(judge(None, &older, NOW), TicketDecision::Replace);
        assert_eq!(judge(Some(&older), &newer, NOW), TicketDecision::Replace);
        assert_eq!(judge(Some(&newer), &older, NOW), TicketDecision::Older);
        assert!(!judge(Some(&newer), &older, NOW).keeps_pushed());
        assert_eq!(
            judge(Some(&newer), &newer.clone(), NOW),
            TicketDecision::Same
        );
    }

    #[test]
    fn any_arrival_order_settles_on_the_same_ticket() {
        let pushes = [
            ticket("m", NOW - 300),
            ticket("z", NOW - 20),
            ticket("a", NOW - 20),
            ticket("q", NOW - 900),
        ];
        let orders: [[usize; 4]; 4] = [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]];
        for order in orders {
            let mut held: Option<PushedTicket> = None;
            for &i in &order {
                if judge(held.as_ref(), &pushes[i], NOW).keeps_pushed() {
                    held = Some(pushes[i].clone());
                }
            }
            assert_eq!(held.unwrap().ticket.expose(), "z", "{order:?}");
        }
    }

    #[test]
    fn dead_and_future_pushes_are_not_kept() {
        let expired = ticket("old", NOW - TICKET_LIFETIME_SECS);
        assert_eq!(judge(None, &expired, NOW), TicketDecision::Expired);
        let barely = ticket("barely", NOW - TICKET_LIFETIME_SECS + 1);
        assert_eq!(judge(None, &barely, NOW), TicketDecision::Replace);
        let future = ticket("future", NOW + FUTURE_SLACK_SECS + 1);
        assert_eq!(judge(None, &future, NOW), TicketDecision::Future);
        let skewed = ticket("skewed", NOW + FUTURE_SLACK_SECS);
        assert_eq!(judge(None, &skewed, NOW), TicketDecision::Replace);
        // A held ticket from a host whose clock ran ahead yields.
        let pinned = ticket("pinned", NOW + 86_400);
        let real = ticket("real", NOW - 5);
        assert_eq!(judge(Some(&pinned), &real, NOW), TicketDecision::Replace);
    }

    #[test]
    fn age_and_usability_follow_the_timestamp() {
        let held = ticket("t", NOW - 1200);
        assert_eq!(age_secs(&held, NOW), 1200);
        assert!(is_usable(&held, NOW));
        assert!(!is_usable(&held, NOW + 600));
        assert_eq!(age_secs(&ticket("t", NOW + 5), NOW), 0);
    }
}
