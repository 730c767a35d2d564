//! Fault injection for the token-issuing endpoints and, in a queue of their
//! own, the ticket-issuing ones: scripted misbehaviours, consumed one call
//! at a time, in the order injected.

use std::collections::VecDeque;
use std::time::Duration;

/// A scripted misbehaviour of the token endpoints (`token`, `stable_token`,
/// `gettoken`), or with [`Simulator::inject_ticket_fault`] of the ticket
/// endpoints. Each covers the next `count` calls; a call that consumes an
/// error fault issues nothing.
///
/// [`Simulator::inject_ticket_fault`]: super::Simulator::inject_ticket_fault
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer `{"errcode":E,"errmsg":...}`.
    Errcode { errcode: i64, count: u32 },
    /// HTTP 500 with an HTML body, as WeChat's front proxies send.
    Http500Html { count: u32 },
    /// HTTP 200 with a truncated, invalid JSON body.
    MalformedJson { count: u32 },
    /// Close the connection without answering.
    DropConnection { count: u32 },
    /// Answer correctly, but only after `delay`.
    Delay { delay: Duration, count: u32 },
}

impl Fault {
    fn count(&self) -> u32 {
        match *self {
            Fault::Errcode { count, .. }
            | Fault::Http500Html { count }
            | Fault::MalformedJson { count }
            | Fault::DropConnection { count }
            | Fault::Delay { count, .. } => count,
        }
    }

    fn count_mut(&mut self) -> &mut u32 {
        match self {
            Fault::Errcode { count, .. }
            | Fault::Http500Html { count }
            | Fault::MalformedJson { count }
            | Fault::DropConnection { count }
            | Fault::Delay { count, .. } => count,
        }
    }
}

/// What one token call must do instead of (or before) answering normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaultAction {
    Errcode(i64),
    Http500Html,
    MalformedJson,
    DropConnection,
    Delay(Duration),
}

#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    queue: VecDeque<Fault>,
}

impl FaultQueue {
    pub(crate) fn push(&mut self, fault: Fault) {
        // A zero-count fault would sit at the head and do nothing.
        if fault.count() > 0 {
            self.queue.push_back(fault);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.queue.clear();
    }

    /// Consumes one call's worth of the head fault.
    pub(crate) fn take(&mut self) -> Option<FaultAction> {
        let head = self.queue.front_mut()?;
        let action = match *head {
            Fault::Errcode { errcode, .. } => FaultAction::Errcode(errcode),
            Fault::Http500Html { .. } => FaultAction::Http500Html,
            Fault::MalformedJson { .. } => FaultAction::MalformedJson,
            Fault::DropConnection { .. } => FaultAction::DropConnection,
            Fault::Delay { delay, .. } => FaultAction::Delay(delay),
        };
        let count = head.count_mut();
        *count -= 1;
        if *count == 0 {
            self.queue.pop_front();
        }
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_consumed_in_order() {
        let mut q = FaultQueue::default();
        q.push(Fault::Errcode {
            errcode: 40164,
            count: 2,
        });
        q.push(Fault::Http500Html { count: 0 });
        q.push(Fault::DropConnection { count: 1 });
        assert_eq!(q.take(), Some(FaultAction::Errcode(40164)));
        assert_eq!(q.take(), Some(FaultAction::Errcode(40164)));
        assert_eq!(q.take(), Some(FaultAction::DropConnection));
        assert_eq!(q.take(), None);
    }
}
