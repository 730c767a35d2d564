//! The engine: one [`CredentialHandle`] per credential, and one task that
//! is its only writer (its refresher, or a follower of another broker);
//! request handlers only read the published [`CredentialView`] and never call
//! WeChat themselves.
//!
//! The engine knows no kind: a credential is a [`CredentialSpec`] and a
//! source ([`TokenSource`](crate::wechat::TokenSource)). The app kind
//! (`app.rs`, `apps.rs`) builds its specs from `[[apps]]`; a platform
//! builds its component token's from `[[platforms]]`, a suite its suite
//! token's from `[[suites]]`.

mod app;
mod apps;
pub(crate) mod backoff;
mod budget;
mod follower;
mod handle;
mod pushed_source;
mod refresher;
pub(crate) mod schedule;
mod spawn;
mod spec;
mod ticket_source;
mod unsaved;
mod view;
mod writer;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::Store;

pub use app::AppHandle;
pub use apps::{Apps, Reconciled};
pub use budget::DailyBudget;
pub use handle::CredentialHandle;
pub use pushed_source::{
    KeptTicket, PushRequest, PushedTicketCaller, PushedTicketShape, PushedTicketSource, TicketCell,
    TicketKeeper, PUSH_REQUEST_INTERVAL,
};
pub use refresher::TokenChecks;
pub use schedule::Reissue;
pub use spec::CredentialSpec;
pub use ticket_source::{TicketSources, WechatTickets};
pub use view::{
    CredentialRecord, CredentialView, InvalidateOutcome, LastError, LeaderState, TokenError,
};
pub use writer::Writer;

/// Everything a credential's writer needs besides its spec and source.
#[derive(Clone)]
pub struct EngineContext {
    pub store: Arc<dyn Store>,
    /// Makes the sources of the apps' tickets.
    pub tickets: Arc<dyn TicketSources>,
    pub metrics: Metrics,
    pub clock: Clock,
    pub tasks: TaskTracker,
    pub cancel: CancellationToken,
    /// When refreshers check their held access tokens upstream.
    pub token_checks: TokenChecks,
}

#[cfg(test)]
mod tests;
