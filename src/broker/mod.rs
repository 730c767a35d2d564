//! The broker: one [`AppHandle`] per configured app, holding one
//! [`CredentialHandle`] per credential (the access token, each JS-SDK
//! ticket). Each credential's refresher task is its only writer; request
//! handlers only read the published [`AppView`] and never call WeChat
//! themselves.
//!
//! The engine knows no kind: a credential is a [`CredentialSpec`] and a
//! source ([`TokenSource`]). The app kind (`app.rs`) builds its specs from
//! `[[apps]]`; a platform builds its component token's from
//! `[[platforms]]`.

mod app;
pub(crate) mod backoff;
mod budget;
mod follower;
mod follower_pace;
mod handle;
mod pushed_source;
mod refresher;
pub(crate) mod schedule;
mod spec;
mod ticket_source;
mod unsaved;
mod view;
mod writer;

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::AppConfig;
use crate::credential::Credential;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::wechat::TokenSource;

pub use app::AppHandle;
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
pub use view::{AppView, InvalidateOutcome, LastError, LeaderState, TokenError, TokenRecord};
pub use writer::Writer;

/// Everything a refresher needs besides its app.
#[derive(Clone)]
pub struct BrokerContext {
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

/// All configured apps, in configuration order. A reload replaces the set
/// atomically; readers holding a handle finish with it.
#[derive(Clone)]
pub struct Broker {
    apps: Arc<ArcSwap<Vec<AppHandle>>>,
    context: BrokerContext,
    /// Held for a whole [`Broker::reconcile`], awaits included: two
    /// reconciles at once could each start a replacement for one app.
    /// It guards no data; readers never touch it.
    reconciling: Arc<tokio::sync::Mutex<()>>,
    /// The Open Platform component apps (DESIGN.md section 13).
    platforms: Arc<ArcSwap<Vec<crate::platform::PlatformHandle>>>,
}

/// What [`Broker::reconcile`] did, by app name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// New apps, started.
    pub added: Vec<String>,
    /// Apps whose settings changed: restarted, keeping their token when
    /// the appid, kind and grant are the same.
    pub restarted: Vec<String>,
    /// Apps no longer configured, stopped.
    pub removed: Vec<String>,
    /// Apps whose settings are unchanged, untouched.
    pub kept: Vec<String>,
}

impl Broker {
    /// Starts one refresher task per app on `context.tasks`; they stop when
    /// `context.cancel` is cancelled.
    pub fn start(
        apps: Vec<(Arc<AppConfig>, Arc<dyn TokenSource>)>,
        context: &BrokerContext,
    ) -> Broker {
        let handles = apps
            .into_iter()
            .map(|(config, source)| AppHandle::spawn(config, source, context, app::Seed::default()))
            .collect();
        Broker {
            apps: Arc::new(ArcSwap::from_pointee(handles)),
            context: context.clone(),
            reconciling: Arc::default(),
            platforms: Arc::default(),
        }
    }

    /// Makes the running apps match `apps`: starts new ones, restarts
    /// changed ones, stops removed ones, and leaves unchanged ones alone
    /// (their tokens and refresh schedules untouched).
    ///
    /// One writer per token, always: a changed app's old refresher is
    /// stopped and waited for (a fetch it had begun finishes and is stored)
    /// before its replacement starts, seeded with the old one's final
    /// state. Until then readers keep the old app, and its token.
    pub async fn reconcile(&self, apps: Vec<(Arc<AppConfig>, Arc<dyn TokenSource>)>) -> Reconciled {
        let _one_at_a_time = self.reconciling.lock().await;
        let running = self.apps.load_full();
        let mut report = Reconciled::default();
        let gone: Vec<&AppHandle> = running
            .iter()
            .filter(|app| {
                !apps
                    .iter()
                    .any(|(config, _)| config.name == app.name() && **config == *app.config())
            })
            .collect();
        futures_util::future::join_all(gone.iter().map(|app| app.stop())).await;
        let mut next = Vec::with_capacity(apps.len());
        for (config, source) in apps {
            let name = config.name.clone();
            match running.iter().find(|app| app.name() == name) {
                Some(app) if *app.config() == *config => {
                    next.push(app.clone());
                    report.kept.push(name);
                }
                Some(app) => {
                    let seed = app.seed_for(&config);
                    next.push(AppHandle::spawn(config, source, &self.context, seed));
                    report.restarted.push(name);
                }
                None => {
                    next.push(AppHandle::spawn(
                        config,
                        source,
                        &self.context,
                        app::Seed::default(),
                    ));
                    report.added.push(name);
                }
            }
        }
        self.apps.store(Arc::new(next));
        for app in gone {
            if !report.restarted.iter().any(|name| name == app.name()) {
                self.context.metrics.forget_app(app.name());
                report.removed.push(app.name().to_owned());
            }
        }
        report
    }

    /// Makes the started platforms visible to the API and the gauges.
    pub fn attach_platforms(&self, platforms: Vec<crate::platform::PlatformHandle>) {
        self.platforms.store(Arc::new(platforms));
    }

    pub fn platforms(&self) -> Arc<Vec<crate::platform::PlatformHandle>> {
        self.platforms.load_full()
    }

    pub fn platform(&self, name: &str) -> Option<crate::platform::PlatformHandle> {
        self.platforms
            .load()
            .iter()
            .find(|platform| platform.name() == name)
            .cloned()
    }

    /// The running WeCom suites (STAND-IN: none until the suite engine
    /// is wired in).
    pub fn suites(&self) -> Arc<Vec<crate::suite::SuiteHandle>> {
        Arc::default()
    }

    pub fn suite(&self, name: &str) -> Option<crate::suite::SuiteHandle> {
        self.suites()
            .iter()
            .find(|suite| suite.name() == name)
            .cloned()
    }

    /// The context the broker's refreshers run in.
    pub fn context(&self) -> &BrokerContext {
        &self.context
    }

    /// `f` of the app named `name`, without cloning its handle: the read
    /// path's way to an app.
    pub fn with_app<R>(&self, name: &str, f: impl FnOnce(&AppHandle) -> R) -> Option<R> {
        self.apps
            .load()
            .iter()
            .find(|app| app.name() == name)
            .map(f)
    }

    /// `f` of the only configured app, as [`Broker::default_app`] finds it.
    pub fn with_default_app<R>(&self, f: impl FnOnce(&AppHandle) -> R) -> Option<R> {
        match self.apps.load().as_slice() {
            [only] => Some(f(only)),
            _ => None,
        }
    }

    pub fn app(&self, name: &str) -> Option<AppHandle> {
        self.with_app(name, AppHandle::clone)
    }

    /// The apps now configured.
    pub fn apps(&self) -> Arc<Vec<AppHandle>> {
        self.apps.load_full()
    }

    /// The app `GET /v1/token` means: the only one, if there is only one.
    pub fn default_app(&self) -> Option<AppHandle> {
        self.with_default_app(AppHandle::clone)
    }

    pub fn names(&self) -> Vec<String> {
        self.apps
            .load()
            .iter()
            .map(|app| app.name().to_owned())
            .collect()
    }

    pub fn now_secs(&self) -> u64 {
        self.context.clock.now_secs()
    }

    pub fn now_ms(&self) -> u64 {
        self.context.clock.now_ms()
    }

    /// Sets the time-dependent gauges; called right before a scrape, since
    /// a token stops being valid without any event to report it.
    pub fn update_gauges(&self) {
        let now = self.now_ms();
        let metrics = &self.context.metrics;
        for platform in self.platforms.load().iter() {
            platform.update_gauges();
        }
        for app in self.apps.load().iter() {
            let view = app.view();
            let name = app.name();
            let valid = view.valid_token(now).is_some();
            if let Some(leader) = &view.leader {
                metrics
                    .leader_reachable
                    .with_label_values(&[name])
                    .set(i64::from(leader.reachable));
            }
            metrics
                .token_valid
                .with_label_values(&[name])
                .set(i64::from(valid));
            if let Some(token) = &view.token {
                metrics
                    .token_expiry
                    .with_label_values(&[name])
                    .set(token.expires_at_ms as f64 / 1000.0);
                // From the token, not the refresh event, so a token loaded
                // on a warm start shows when it was fetched.
                metrics
                    .token_last_refresh
                    .with_label_values(&[name])
                    .set(token.fetched_at_ms as f64 / 1000.0);
            }
            for (kind, ticket) in app.tickets() {
                let view = ticket.view();
                let labels = [name, kind.name()];
                let valid = view.valid_token(now).is_some();
                metrics
                    .ticket_valid
                    .with_label_values(&labels)
                    .set(i64::from(valid));
                if let Some(ticket) = &view.token {
                    metrics
                        .ticket_expiry
                        .with_label_values(&labels)
                        .set(ticket.expires_at_ms as f64 / 1000.0);
                }
                let credential = Credential::Ticket(kind).label();
                metrics
                    .fetches_today
                    .with_label_values(&[name, credential])
                    .set(i64::from(view.fetches_on(now / 1000)));
                metrics
                    .daily_budget
                    .with_label_values(&[name, credential])
                    .set(i64::from(ticket.spec().daily_budget));
            }
            let credential = Credential::AccessToken.label();
            metrics
                .fetches_today
                .with_label_values(&[name, credential])
                .set(i64::from(view.fetches_on(now / 1000)));
            metrics
                .daily_budget
                .with_label_values(&[name, credential])
                .set(i64::from(app.spec().daily_budget));
        }
    }
}

#[cfg(test)]
mod tests;
