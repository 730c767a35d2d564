//! The broker: every configured credential, by kind. The apps (with their
//! tickets) run on the engine's [`Apps`]; the Open Platform's component
//! apps and WeCom's suites are attached once started. A reload replaces
//! each set atomically; readers holding a handle finish with it. Their
//! gauges are read from here when the registry is gathered ([`gauges`]).

pub mod gauges;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::AppConfig;
use crate::engine::{AppHandle, Apps, EngineContext, Reconciled};
use crate::platform::PlatformHandle;
use crate::suite::SuiteHandle;
use crate::wechat::TokenSource;

/// Every configured credential of the daemon. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    kinds: Arc<Kinds>,
}

/// The credentials, by kind. Behind one `Arc` so the gauges' collector
/// can hold it weakly: the registry it is registered with lives in the
/// apps' own context, and a strong hold would be a loop never freed.
struct Kinds {
    apps: Apps,
    /// The Open Platform component apps (DESIGN.md section 13).
    platforms: ArcSwap<Vec<PlatformHandle>>,
    /// WeCom service providers' suites (DESIGN.md section 19).
    suites: ArcSwap<Vec<SuiteHandle>>,
}

impl Broker {
    /// Starts one refresher task per app on `context.tasks`; they stop when
    /// `context.cancel` is cancelled.
    pub fn start(
        apps: Vec<(Arc<AppConfig>, Arc<dyn TokenSource>)>,
        context: &EngineContext,
    ) -> Broker {
        Broker {
            kinds: Arc::new(Kinds {
                apps: Apps::start(apps, context),
                platforms: ArcSwap::default(),
                suites: ArcSwap::default(),
            }),
        }
    }

    /// Makes the running apps match `apps` ([`Apps::reconcile`]).
    pub async fn reconcile(&self, apps: Vec<(Arc<AppConfig>, Arc<dyn TokenSource>)>) -> Reconciled {
        self.kinds.apps.reconcile(apps).await
    }

    /// Makes the started platforms visible to the API and the gauges.
    pub fn attach_platforms(&self, platforms: Vec<PlatformHandle>) {
        self.kinds.platforms.store(Arc::new(platforms));
    }

    pub fn platforms(&self) -> Arc<Vec<PlatformHandle>> {
        self.kinds.platforms.load_full()
    }

    pub fn platform(&self, name: &str) -> Option<PlatformHandle> {
        self.kinds
            .platforms
            .load()
            .iter()
            .find(|platform| platform.name() == name)
            .cloned()
    }

    /// Makes the started suites visible to the API and the gauges.
    pub fn attach_suites(&self, suites: Vec<SuiteHandle>) {
        self.kinds.suites.store(Arc::new(suites));
    }

    pub fn suites(&self) -> Arc<Vec<SuiteHandle>> {
        self.kinds.suites.load_full()
    }

    pub fn suite(&self, name: &str) -> Option<SuiteHandle> {
        self.kinds
            .suites
            .load()
            .iter()
            .find(|suite| suite.name() == name)
            .cloned()
    }

    /// The context the broker's refreshers run in.
    pub fn context(&self) -> &EngineContext {
        self.kinds.apps.context()
    }

    /// `f` of the app named `name`, without cloning its handle: the read
    /// path's way to an app.
    pub fn with_app<R>(&self, name: &str, f: impl FnOnce(&AppHandle) -> R) -> Option<R> {
        self.kinds.apps.with_app(name, f)
    }

    /// `f` of the only configured app, as [`Broker::default_app`] finds it.
    pub fn with_default_app<R>(&self, f: impl FnOnce(&AppHandle) -> R) -> Option<R> {
        self.kinds.apps.with_default_app(f)
    }

    pub fn app(&self, name: &str) -> Option<AppHandle> {
        self.kinds.apps.app(name)
    }

    /// The apps now configured.
    pub fn apps(&self) -> Arc<Vec<AppHandle>> {
        self.kinds.apps.apps()
    }

    /// The app `GET /v1/token` means: the only one, if there is only one.
    pub fn default_app(&self) -> Option<AppHandle> {
        self.kinds.apps.default_app()
    }

    pub fn names(&self) -> Vec<String> {
        self.kinds.apps.names()
    }

    pub fn now_secs(&self) -> u64 {
        self.kinds.apps.now_secs()
    }

    pub fn now_ms(&self) -> u64 {
        self.kinds.apps.now_ms()
    }
}
