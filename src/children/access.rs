//! The readers' operations on a family's children, whatever the parent
//! kind: a child's valid token (waiting a bounded while for one), and a
//! client's report that a token was rejected (compare-and-refresh through
//! the scheduler, the table's only writer).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::scheduler::Command;
use super::table::{ChildToken, Hold, Table};
use crate::clock::Clock;

/// Why a child's token cannot be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildError {
    /// No such child (the table is complete: stored children are loaded).
    NotFound,
    /// No valid token within the wait, or none soon: `held` says why
    /// when the child is held ([`Hold::None`] when it simply has none yet).
    Unavailable { held: Hold },
}

/// Child `id`'s valid token, waiting up to `wait` when it has none yet
/// (just authorized, or being refreshed after expiry); at once
/// unavailable when it has none and is held.
pub async fn token(
    table: &Table,
    clock: Clock,
    id: &str,
    wait: Duration,
) -> Result<Arc<ChildToken>, ChildError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let changed = table.changed.notified();
        let slot = table.get(id);
        if slot.is_none() && table.is_loaded() {
            return Err(ChildError::NotFound);
        }
        let hold = slot.as_ref().map_or(Hold::None, |slot| slot.hold());
        let token = slot.and_then(|slot| slot.token());
        if let Some(token) = token.filter(|t| t.is_valid(clock.now_ms())) {
            return Ok(token);
        }
        // Held (a configuration errcode, 45009, the budget spent):
        // waiting cannot bring a token soon, so the answer is now.
        if hold != Hold::None {
            return Err(ChildError::Unavailable { held: hold });
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return Err(ChildError::Unavailable { held: Hold::None });
        }
    }
}

/// Reports `reported` rejected; answers with the token to use next and
/// whether it is a new one, waiting up to `wait` for the refresh. A
/// report of a token that is not the child's current one, or one too
/// young to replace, refreshes nothing and answers the current token.
pub async fn invalidate(
    table: &Table,
    commands: &mpsc::Sender<Command>,
    clock: Clock,
    id: &str,
    reported: &str,
    wait: Duration,
) -> Result<(Arc<ChildToken>, bool), ChildError> {
    let unavailable = |slot: Option<&super::table::Slot>| ChildError::Unavailable {
        held: slot.map_or(Hold::None, |slot| slot.hold()),
    };
    table.get(id).ok_or(ChildError::NotFound)?;
    let (reply, scheduled) = oneshot::channel();
    let command = Command::Invalidate {
        id: id.to_owned(),
        reported: reported.to_owned(),
        reply,
    };
    let deadline = tokio::time::Instant::now() + wait;
    // A scheduler that stopped (shutdown) refreshes nothing.
    let sent = tokio::time::timeout_at(deadline, commands.send(command)).await;
    let scheduled = matches!(sent, Ok(Ok(()))) && scheduled.await.unwrap_or(false);
    loop {
        let changed = table.changed.notified();
        let slot = table.get(id).ok_or(ChildError::NotFound)?;
        let token = slot.token().filter(|t| t.is_valid(clock.now_ms()));
        let replaced = token.as_ref().filter(|t| t.value.expose() != reported);
        match (scheduled, replaced) {
            (true, Some(token)) => return Ok((token.clone(), true)),
            (false, _) => return token.map(|t| (t, false)).ok_or(unavailable(Some(&slot))),
            (true, None) => {}
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return token.map(|t| (t, false)).ok_or(unavailable(Some(&slot)));
        }
    }
}
