//! The app kind's running set: one [`AppHandle`] per configured app, in
//! configuration order, swapped whole by a reload.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::app::{self, AppHandle};
use super::EngineContext;
use crate::config::AppConfig;
use crate::wechat::TokenSource;

/// All configured apps, in configuration order. A reload replaces the set
/// atomically; readers holding a handle finish with it.
#[derive(Clone)]
pub struct Apps {
    apps: Arc<ArcSwap<Vec<AppHandle>>>,
    context: EngineContext,
    /// Held for a whole [`Apps::reconcile`], awaits included: two
    /// reconciles at once could each start a replacement for one app.
    /// It guards no data; readers never touch it.
    reconciling: Arc<tokio::sync::Mutex<()>>,
}

/// What [`Apps::reconcile`] did, by app name.
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

impl Apps {
    /// Starts one refresher task per app on `context.tasks`; they stop when
    /// `context.cancel` is cancelled.
    pub fn start(
        apps: Vec<(Arc<AppConfig>, Arc<dyn TokenSource>)>,
        context: &EngineContext,
    ) -> Apps {
        let handles = apps
            .into_iter()
            .map(|(config, source)| AppHandle::spawn(config, source, context, app::Seed::default()))
            .collect();
        Apps {
            apps: Arc::new(ArcSwap::from_pointee(handles)),
            context: context.clone(),
            reconciling: Arc::default(),
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

    /// The context the broker's refreshers run in.
    pub fn context(&self) -> &EngineContext {
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

    /// `f` of the only configured app, as [`Apps::default_app`] finds it.
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
}
