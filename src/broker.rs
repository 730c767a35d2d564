//! The broker: every configured credential, by kind. The apps (with their
//! tickets) run on the engine's [`Apps`]; the Open Platform's component
//! apps and WeCom's suites are attached once started. A reload replaces
//! each set atomically; readers holding a handle finish with it.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::AppConfig;
use crate::credential::Credential;
use crate::engine::{AppHandle, Apps, EngineContext, Reconciled};
use crate::platform::PlatformHandle;
use crate::suite::SuiteHandle;
use crate::wechat::TokenSource;

/// Every configured credential of the daemon.
#[derive(Clone)]
pub struct Broker {
    apps: Apps,
    /// The Open Platform component apps (DESIGN.md section 13).
    platforms: Arc<ArcSwap<Vec<PlatformHandle>>>,
    /// WeCom service providers' suites (DESIGN.md section 19).
    suites: Arc<ArcSwap<Vec<SuiteHandle>>>,
}

impl Broker {
    /// Starts one refresher task per app on `context.tasks`; they stop when
    /// `context.cancel` is cancelled.
    pub fn start(
        apps: Vec<(Arc<AppConfig>, Arc<dyn TokenSource>)>,
        context: &EngineContext,
    ) -> Broker {
        Broker {
            apps: Apps::start(apps, context),
            platforms: Arc::default(),
            suites: Arc::default(),
        }
    }

    /// Makes the running apps match `apps` ([`Apps::reconcile`]).
    pub async fn reconcile(&self, apps: Vec<(Arc<AppConfig>, Arc<dyn TokenSource>)>) -> Reconciled {
        self.apps.reconcile(apps).await
    }

    /// Makes the started platforms visible to the API and the gauges.
    pub fn attach_platforms(&self, platforms: Vec<PlatformHandle>) {
        self.platforms.store(Arc::new(platforms));
    }

    pub fn platforms(&self) -> Arc<Vec<PlatformHandle>> {
        self.platforms.load_full()
    }

    pub fn platform(&self, name: &str) -> Option<PlatformHandle> {
        self.platforms
            .load()
            .iter()
            .find(|platform| platform.name() == name)
            .cloned()
    }

    /// Makes the started suites visible to the API and the gauges.
    pub fn attach_suites(&self, suites: Vec<SuiteHandle>) {
        self.suites.store(Arc::new(suites));
    }

    pub fn suites(&self) -> Arc<Vec<SuiteHandle>> {
        self.suites.load_full()
    }

    pub fn suite(&self, name: &str) -> Option<SuiteHandle> {
        self.suites
            .load()
            .iter()
            .find(|suite| suite.name() == name)
            .cloned()
    }

    /// The context the broker's refreshers run in.
    pub fn context(&self) -> &EngineContext {
        self.apps.context()
    }

    /// `f` of the app named `name`, without cloning its handle: the read
    /// path's way to an app.
    pub fn with_app<R>(&self, name: &str, f: impl FnOnce(&AppHandle) -> R) -> Option<R> {
        self.apps.with_app(name, f)
    }

    /// `f` of the only configured app, as [`Broker::default_app`] finds it.
    pub fn with_default_app<R>(&self, f: impl FnOnce(&AppHandle) -> R) -> Option<R> {
        self.apps.with_default_app(f)
    }

    pub fn app(&self, name: &str) -> Option<AppHandle> {
        self.apps.app(name)
    }

    /// The apps now configured.
    pub fn apps(&self) -> Arc<Vec<AppHandle>> {
        self.apps.apps()
    }

    /// The app `GET /v1/token` means: the only one, if there is only one.
    pub fn default_app(&self) -> Option<AppHandle> {
        self.apps.default_app()
    }

    pub fn names(&self) -> Vec<String> {
        self.apps.names()
    }

    pub fn now_secs(&self) -> u64 {
        self.apps.now_secs()
    }

    pub fn now_ms(&self) -> u64 {
        self.apps.now_ms()
    }

    /// Sets the time-dependent gauges; called right before a scrape, since
    /// a token stops being valid without any event to report it.
    pub fn update_gauges(&self) {
        let now = self.now_ms();
        let metrics = &self.apps.context().metrics;
        for platform in self.platforms.load().iter() {
            platform.update_gauges();
        }
        for suite in self.suites.load().iter() {
            suite.update_gauges();
        }
        for app in self.apps.apps().iter() {
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
