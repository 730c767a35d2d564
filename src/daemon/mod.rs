//! The running daemon: [`start`] wires the store, the broker, the
//! upstream clients and the listeners together from already-bound
//! [`Listeners`]; [`Daemon`] reloads, reports readiness and shuts down.
//!
//! The Open Platform's platforms, the WeCom suites and a reload have a
//! file each.

mod platforms;
mod reload;
mod suites;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::audit::{self, AuditControl, AuditSettings};
use crate::broker::Broker;
use crate::clock::Clock;
use crate::config::{self, Config, StoreBackend};
use crate::diagnostics::{self, Diagnostics, PollSchedule, ResetLedger};
use crate::engine::{self, EngineContext};
use crate::identity::Clients;
use crate::metrics::Metrics;
use crate::server::proxy::{Proxy, PROXY_TIMEOUT};
use crate::server::{self, ApiState, Listeners};
use crate::sink::{self, SinkError, SinkHandle};
use crate::store::{FileStore, MemoryStore, RedisStore, Store, StoreError};
use crate::tls;
use crate::upstream;
use crate::wechat::{self, TokenSource, WechatSource};
use platforms::start_platforms;
use suites::start_suites;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store")]
    Store(#[from] StoreError),
    #[error("could not build the upstream HTTP client")]
    HttpClient(#[source] upstream::ClientError),
    #[error("server.compat_tls")]
    Tls(#[from] tls::TlsError),
    /// The request threads could not be started on the listeners.
    #[error("could not start the request threads")]
    Serve(#[source] std::io::Error),
    /// An upstream that is one of the daemon's own listeners.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

/// A running daemon: its broker, metrics, and the tasks to stop.
pub struct Daemon {
    pub broker: Broker,
    pub metrics: Metrics,
    sinks: std::sync::Mutex<Vec<SinkHandle>>,
    /// The API's `[[clients]]`, replaced by a reload: a revoked
    /// credential stops working without a restart.
    clients: Arc<arc_swap::ArcSwap<Clients>>,
    /// Where the call audit writes; a reload applies `[log] audit_file`.
    audit: AuditControl,
    /// The remote clients' open watches, ended when a reload revokes
    /// their client.
    watches: Arc<server::Watches>,
    /// The listeners' addresses, which no upstream may reach.
    own_listeners: Vec<config::OwnListener>,
    /// The configuration in effect (what a reload compares against).
    running: std::sync::Mutex<Config>,
    http: reqwest::Client,
    tasks: TaskTracker,
    cancel: CancellationToken,
    /// Closed last, once the refreshers are done with it.
    store: Arc<dyn Store>,
}

/// Added to a shutdown's deadline for the last store writes.
const STOP_MARGIN: Duration = Duration::from_secs(5);

/// An app without a valid token, and why (as `/readyz` says it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    pub app: String,
    pub reason: String,
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.app, self.reason)
    }
}

impl Daemon {
    /// Waits, at most `timeout`, until every app has either a valid token
    /// or a failed first attempt on record, then returns the apps without a
    /// valid token. What systemd's `READY=1` and `--exit-after-token` wait
    /// for: the start-up outcome is known, good or bad.
    pub async fn first_attempts(&self, timeout: Duration) -> Vec<NotReady> {
        let wait_all = async {
            for app in self.broker.apps().iter() {
                let mut views = app.subscribe();
                // An error means the refresher stopped: nothing more to wait for.
                let _ = views.wait_for(|view| view.settled(app.now_ms())).await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait_all).await;
        self.not_ready()
    }

    /// The apps without a valid token right now.
    pub fn not_ready(&self) -> Vec<NotReady> {
        self.broker
            .apps()
            .iter()
            .filter_map(|app| {
                let reason = app.view().unready_reason(app.now_ms())?;
                Some(NotReady {
                    app: app.name().to_owned(),
                    reason,
                })
            })
            .collect()
    }

    /// Makes every configured sink file hold its app's current token,
    /// returning the writes that failed.
    pub async fn flush_sinks(&self) -> Result<(), Vec<SinkError>> {
        let mut failed = Vec::new();
        let sinks = self.sinks.lock().expect("sink list poisoned").clone();
        for sink in &sinks {
            if let Err(err) = sink.flush().await {
                failed.push(err);
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed)
        }
    }

    /// Stops accepting, drains connections, stops the refreshers, and
    /// removes the socket file. A refresher in the middle of an upstream
    /// fetch finishes it and stores the token first. The whole stop is
    /// bounded: by twice the longest `fetch_timeout` or the connection
    /// drain, whichever is longer, and a margin.
    pub async fn shutdown(self) {
        let deadline = self.stop_deadline();
        self.cancel.cancel();
        self.tasks.close();
        if tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                ?deadline,
                tasks = self.tasks.len(),
                "tasks still running at the shutdown deadline; exiting without them"
            );
        }
        // A refresh lock still held (a refresher cut off by the deadline)
        // would keep the rest of the fleet waiting for its lease.
        let _ = tokio::time::timeout(STOP_MARGIN, self.store.close()).await;
    }

    /// How long a shutdown waits for its tasks: the connection drain, or
    /// the longest upstream fetch a refresher may be in (an invalidation
    /// of a stable token makes two calls), and a margin for the store.
    fn stop_deadline(&self) -> Duration {
        let fetch = self
            .running
            .lock()
            .expect("running config poisoned")
            .apps
            .iter()
            .map(|app| app.fetch_timeout)
            .max()
            .unwrap_or_default();
        (fetch * 2).max(server::DRAIN_DEADLINE) + STOP_MARGIN
    }
}

/// Fixed behaviour that tests need to shorten; not part of the
/// configuration file.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Deadline of one proxied upstream attempt; [`PROXY_TIMEOUT`].
    pub proxy_timeout: Duration,
    /// When the daemon polls WeChat's `quota/get` (every 15 minutes);
    /// `None` turns the poll off.
    pub quota_poll: Option<PollSchedule>,
    /// The platforms' authorizer scheduler (its fetch rate, 20 a second).
    pub authorizers: crate::platform::authorizers::SchedulerTuning,
    /// The suites' corp scheduler (its fetch rate, 20 a second).
    pub corps: crate::platform::authorizers::SchedulerTuning,
    /// When the refreshers check their held access tokens upstream
    /// (every 10 minutes, and after a fetch that timed out).
    pub token_checks: engine::TokenChecks,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            proxy_timeout: PROXY_TIMEOUT,
            quota_poll: Some(PollSchedule::default()),
            authorizers: Default::default(),
            corps: Default::default(),
            token_checks: Default::default(),
        }
    }
}

/// Starts the broker and serves on `listeners`.
pub async fn start(config: &Config, listeners: Listeners) -> Result<Daemon, StartError> {
    start_with(config, listeners, Tuning::default()).await
}

/// [`start`] with non-default [`Tuning`].
pub async fn start_with(
    config: &Config,
    listeners: Listeners,
    tuning: Tuning,
) -> Result<Daemon, StartError> {
    // Before anything starts: a loop back to the broker is a
    // configuration error, not something to find at the first request.
    let own_listeners = listeners.own_addrs();
    config.check_upstreams_avoid(&own_listeners)?;
    let metrics = Metrics::new();
    let redis = match &config.store.backend {
        StoreBackend::Redis(redis) => Some(Arc::new(RedisStore::configured(
            redis,
            &config.store.key_prefix,
        )?)),
        _ => None,
    };
    let store: Arc<dyn Store> = match (&config.store.backend, &redis) {
        (_, Some(redis)) => redis.clone(),
        (StoreBackend::File { path }, None) => Arc::new(FileStore::open(path)?),
        _ => Arc::new(MemoryStore::new()),
    };
    let http = wechat::upstream_client(&config.upstream).map_err(StartError::HttpClient)?;
    let apps = app_sources(config, &http);
    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    let context = EngineContext {
        store: store.clone(),
        tickets: Arc::new(engine::WechatTickets::new(http.clone())),
        metrics: metrics.clone(),
        clock: Clock::new(),
        tasks: tasks.clone(),
        cancel: cancel.clone(),
        token_checks: tuning.token_checks.clone(),
    };
    let broker = Broker::start(apps, &context);
    // The credentials' gauges are read from the broker at each scrape.
    crate::broker::gauges::register(&broker, &metrics);
    if let Some(redis) = &redis {
        spawn_other_prefix_check(redis.clone(), config, &tasks, &cancel);
    }
    let diagnostics = Arc::new(Diagnostics::new(
        http.clone(),
        ResetLedger::for_store(&config.store, redis.clone()),
        config.server.token_wait_timeout,
    ));
    if let Some(schedule) = tuning.quota_poll {
        diagnostics::poll::spawn(
            diagnostics.clone(),
            broker.clone(),
            diagnostics::poll::QuotaMetrics::new(&metrics),
            schedule,
            &tasks,
            &cancel,
        );
    }
    start_platforms(config, &broker, &http, redis.clone(), tuning.authorizers)?;
    start_suites(config, &broker, &http, redis.clone(), tuning.corps);
    let sinks = broker
        .apps()
        .iter()
        .filter_map(|app| spawn_sink(app, &tasks))
        .collect();
    let clients = Arc::new(arc_swap::ArcSwap::from_pointee(Clients::new(
        &config.clients,
    )));
    // The writer outlives the listeners' drain, so the calls finishing
    // during it are recorded too.
    let (auditor, audit) = audit::spawn(
        AuditSettings::of(&config.log),
        &metrics,
        clients.clone(),
        &tasks,
        &cancel,
        server::DRAIN_DEADLINE + Duration::from_secs(1),
    );
    let mut state = ApiState::new(
        broker.clone(),
        metrics.clone(),
        config.server.token_wait_timeout,
        Proxy::new(
            server::proxy::Upstream::new(&config.upstream, tuning.proxy_timeout)
                .map_err(StartError::HttpClient)?,
            tuning.proxy_timeout,
            config.server.token_wait_timeout,
            metrics.clone(),
            auditor,
        ),
        diagnostics,
        config.server.remote_max_watches_per_client,
    );
    state.clients = clients.clone();
    let state = Arc::new(state);
    if let Some(addr) = listeners.api_tcp_addr() {
        info!(%addr, "token api listening on tcp");
    }
    if let Some(path) = listeners.unix_path() {
        info!(path = %path.display(), "token api listening on unix socket");
    }
    if let Some(addr) = listeners.compat_addr() {
        info!(%addr, "wechat-compatible api listening");
    }
    if let Some(addr) = listeners.callback_addr() {
        info!(%addr, "open platform and suite callbacks listening");
    }
    if let Some(addr) = listeners.metrics_addr() {
        info!(%addr, "metrics and probes listening");
    }
    let compat_tls = match &config.server.compat_tls {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(
            &files.cert_file,
            &files.key_file,
        )?)),
        None => None,
    };
    let remote_tls = match &config.server.remote_tls {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config_for(
            &files.cert_file,
            &files.key_file,
            ("server.remote_tls.cert_file", "server.remote_tls.key_file"),
        )?)),
        None => None,
    };
    if let Some(addr) = listeners.remote_addr() {
        info!(%addr, "remote token api listening (tls, [[clients]] only)");
    }
    let watches = state.watches.clone();
    server::spawn(
        listeners,
        state,
        &config.server,
        compat_tls,
        remote_tls,
        &tasks,
        &cancel,
    )
    .map_err(StartError::Serve)?;
    Ok(Daemon {
        broker,
        metrics,
        sinks: std::sync::Mutex::new(sinks),
        clients,
        audit,
        watches,
        own_listeners,
        running: std::sync::Mutex::new(config.clone()),
        http,
        tasks,
        cancel,
        store,
    })
}

/// Looks once, in the background, for the apps' appids under another
/// `key_prefix` in the shared store (DESIGN.md section 21). Followers are
/// left out: they store nothing in Redis, and a leader's fleet may well
/// share it.
fn spawn_other_prefix_check(
    redis: Arc<RedisStore>,
    config: &Config,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
) {
    let appids: Vec<String> = config
        .apps
        .iter()
        .filter(|app| app.follow.is_none())
        .map(|app| app.appid.clone())
        .collect();
    if appids.is_empty() {
        return;
    }
    let cancel = cancel.clone();
    tasks.spawn(async move {
        let appids: Vec<&str> = appids.iter().map(String::as_str).collect();
        cancel
            .run_until_cancelled(redis.warn_of_other_prefixes(&appids))
            .await;
    });
}

fn app_sources(
    config: &Config,
    http: &reqwest::Client,
) -> Vec<(Arc<config::AppConfig>, Arc<dyn TokenSource>)> {
    config
        .apps
        .iter()
        .map(|app| {
            let source: Arc<dyn TokenSource> = Arc::new(WechatSource::new(http.clone(), app));
            (Arc::new(app.clone()), source)
        })
        .collect()
}

/// Starts the app's sink task, if it has a sink; it stops with the app.
fn spawn_sink(app: &engine::AppHandle, tasks: &TaskTracker) -> Option<SinkHandle> {
    let config = app.config().sink.clone()?;
    info!(app = %app.name(), path = %config.path.display(), "token sink configured");
    Some(sink::spawn(app.clone(), config, tasks, app.stopped()))
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(
    config: &Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let daemon = start(config, listeners).await?;
    shutdown.await;
    info!("shutting down");
    daemon.shutdown().await;
    Ok(())
}
