//! The listeners: the token API on TCP and on a Unix socket, the
//! WeChat-compatible listener, and the operations listener for Prometheus
//! and probes. Binding is separate from serving so tests (and `demo`) can
//! bind ephemeral ports themselves. The token API's proxy route and the
//! compatible listener share one forwarding core, [`proxy`].

mod accept_errors;
mod api;
mod api_error;
mod budget;
pub mod compat;
mod credentials;
mod listener;
mod ops;
pub mod proxy;
mod request;
pub mod respond;
mod state;
mod tcp_peer;
pub mod unix;
mod watches;
mod workers;
mod write_stall;

pub use listener::{DRAIN_DEADLINE, TLS_HANDSHAKE_DEADLINE};
pub use watches::Watches;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use http::{Request, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::config::{Config, ServerConfig};
use crate::fd_limit;
use crate::http_io::RequestBody;
use crate::metrics::Metrics;
pub use api::ListenerKind;
use api::Router;
use budget::BudgetMetrics;
use compat::CompatState;
use listener::{Connections, Deadlines, Handler};
use respond::Body;
pub use state::ApiState;
use tcp_peer::TcpOrigin;
pub use unix::{UnixBindError, UnixSocket};
use workers::RequestThreads;

/// Probes and scrapes must get through even when clients hold every API
/// connection, so the operations listener has its own small limit (and
/// the open-file budget keeps room for it).
const OPS_CONNECTIONS: usize = 64;

/// The sockets the daemon serves on, bound before it starts.
#[derive(Debug, Default)]
pub struct Listeners {
    pub api_tcp: Option<TcpListener>,
    pub api_unix: Option<UnixSocket>,
    pub metrics: Option<TcpListener>,
    /// The WeChat-compatible listener (`wechat_compat_listen`).
    pub compat: Option<TcpListener>,
    /// Compatible listeners that serve one app each (`[[apps]]
    /// compat_listen`): the app's name and its listener.
    pub app_compat: Vec<(String, TcpListener)>,
    /// The remote listener (`remote_listen`): TLS, `[[clients]]` only.
    pub remote: Option<TcpListener>,
    /// Where WeChat's Open Platform pushes arrive (`callback_listen`).
    pub callback: Option<TcpListener>,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{key} {addr}")]
    Tcp {
        key: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Unix(#[from] UnixBindError),
}

impl Listeners {
    /// Binds what the configuration asks for: the `[server]` listeners
    /// and each app's `compat_listen`.
    pub async fn bind(config: &Config) -> Result<Self, BindError> {
        let server = &config.server;
        let tcp = |key: String, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| BindError::Tcp { key, addr, source })
        };
        let api_tcp = match server.listen {
            Some(addr) => Some(tcp("server.listen".into(), addr).await?),
            None => None,
        };
        let metrics = match server.metrics_listen {
            Some(addr) => Some(tcp("server.metrics_listen".into(), addr).await?),
            None => None,
        };
        let compat = match server.wechat_compat_listen {
            Some(addr) => Some(tcp("server.wechat_compat_listen".into(), addr).await?),
            None => None,
        };
        let remote = match server.remote_listen {
            Some(addr) => Some(tcp("server.remote_listen".into(), addr).await?),
            None => None,
        };
        let mut app_compat = Vec::new();
        for app in &config.apps {
            if let Some(addr) = app.compat_listen {
                let key = format!("apps.{}.compat_listen", app.name);
                app_compat.push((app.name.clone(), tcp(key, addr).await?));
            }
        }
        let callback = match server.callback_listen {
            Some(addr) => Some(tcp("server.callback_listen".into(), addr).await?),
            None => None,
        };
        let api_unix = match &server.unix_socket {
            Some(path) => Some(
                UnixSocket::bind(path, server.socket_mode, server.socket_group.as_deref()).await?,
            ),
            None => None,
        };
        Ok(Listeners {
            api_tcp,
            api_unix,
            metrics,
            compat,
            app_compat,
            remote,
            callback,
        })
    }

    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn callback_addr(&self) -> Option<SocketAddr> {
        self.callback.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn api_tcp_addr(&self) -> Option<SocketAddr> {
        self.api_tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn compat_addr(&self) -> Option<SocketAddr> {
        self.compat.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address of `app`'s own compatible listener.
    pub fn app_compat_addr(&self, app: &str) -> Option<SocketAddr> {
        self.app_compat
            .iter()
            .find(|(name, _)| name == app)
            .and_then(|(_, listener)| listener.local_addr().ok())
    }

    /// Every TCP listener's address, with the key that sets it: what no
    /// upstream may reach (see [`Config::check_upstreams_avoid`]).
    pub fn own_addrs(&self) -> Vec<crate::config::OwnListener> {
        let server = [
            ("server.listen", &self.api_tcp),
            ("server.metrics_listen", &self.metrics),
            ("server.wechat_compat_listen", &self.compat),
            ("server.remote_listen", &self.remote),
            ("server.callback_listen", &self.callback),
        ]
        .into_iter()
        .filter_map(|(key, listener)| {
            Some((key.to_owned(), listener.as_ref()?.local_addr().ok()?))
        });
        let apps = self.app_compat.iter().filter_map(|(app, listener)| {
            Some((
                format!("apps.{app}.compat_listen"),
                listener.local_addr().ok()?,
            ))
        });
        server.chain(apps).collect()
    }

    pub fn unix_path(&self) -> Option<PathBuf> {
        self.api_unix.as_ref().map(|socket| socket.path.clone())
    }
}

#[derive(Clone)]
struct ApiHandler {
    router: Arc<Router>,
    kind: ListenerKind,
    /// On the TCP listener, the connection's two ends: its peer is
    /// identified when uid or gid clients limit local callers.
    origin: Option<Arc<TcpOrigin>>,
}

impl Handler for ApiHandler {
    fn answer_now(&self, request: &Request<RequestBody>) -> Option<Response<Body>> {
        self.router.answer_now(self.kind, request)
    }

    async fn call(&self, mut request: Request<RequestBody>) -> Response<Body> {
        let clients = &self.router.state().clients;
        tcp_peer::identify_request(clients, self.origin.as_deref(), &mut request).await;
        self.router.handle(self.kind, request).await
    }

    fn for_connection(&self, origin: impl FnOnce() -> Option<TcpOrigin>) -> Self {
        let origin = match self.kind {
            ListenerKind::Tcp { .. } => origin().map(Arc::new),
            // The Unix socket knows its peer; the remote listener's
            // clients prove who they are.
            ListenerKind::Unix | ListenerKind::Remote => None,
        };
        ApiHandler {
            router: self.router.clone(),
            kind: self.kind,
            origin,
        }
    }
}

#[derive(Clone)]
struct CompatHandler {
    state: Arc<CompatState>,
    /// The connection's two ends, as [`ApiHandler`]'s.
    origin: Option<Arc<TcpOrigin>>,
}

impl Handler for CompatHandler {
    async fn call(&self, mut request: Request<RequestBody>) -> Response<Body> {
        let clients = &self.state.api().clients;
        tcp_peer::identify_request(clients, self.origin.as_deref(), &mut request).await;
        compat::handle(&self.state, request).await
    }

    fn for_connection(&self, origin: impl FnOnce() -> Option<TcpOrigin>) -> Self {
        CompatHandler {
            state: self.state.clone(),
            origin: origin().map(Arc::new),
        }
    }
}

#[derive(Clone)]
struct CallbackHandler {
    broker: Broker,
}

impl Handler for CallbackHandler {
    async fn call(&self, request: Request<RequestBody>) -> Response<Body> {
        if request
            .uri()
            .path()
            .starts_with(crate::suite::route::PREFIX)
        {
            return crate::suite::route::handle(&self.broker.suites(), request).await;
        }
        crate::platform::callback::handle(&self.broker.platforms(), request).await
    }
}

/// The callback listener faces the internet (behind the operator's
/// ingress): its own connection limit, so pushes cannot starve the API.
const CALLBACK_CONNECTIONS: usize = 256;

#[derive(Clone)]
struct OpsHandler {
    broker: Broker,
    metrics: Metrics,
}

impl Handler for OpsHandler {
    async fn call(&self, request: Request<RequestBody>) -> Response<Body> {
        ops::handle(&self.broker, &self.metrics, &request)
    }
}

/// Spawns a serving task per listener on `tasks`; each stops accepting on
/// `cancel`, drains, and (for the Unix socket) removes its file. The
/// request listeners' connections (the token API's, the compatible and
/// the remote listeners') run on the request threads (`workers`).
pub fn spawn(
    listeners: Listeners,
    state: Arc<ApiState>,
    server: &ServerConfig,
    compat_tls: Option<tokio_rustls::TlsAcceptor>,
    remote_tls: Option<tokio_rustls::TlsAcceptor>,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
) -> std::io::Result<()> {
    // Each listener its own budget, so no listener's peers can take
    // another's slots; together they have to fit the open-file limit.
    let any_compat = listeners.compat.is_some() || !listeners.app_compat.is_empty();
    let wanted: Vec<(&'static str, usize)> = [
        ("tcp", listeners.api_tcp.is_some(), server.max_connections),
        ("unix", listeners.api_unix.is_some(), server.max_connections),
        ("compat", any_compat, server.max_connections),
        (
            "remote",
            listeners.remote.is_some() && remote_tls.is_some(),
            server.remote_max_connections,
        ),
        (
            "callback",
            listeners.callback.is_some(),
            CALLBACK_CONNECTIONS,
        ),
    ]
    .into_iter()
    .filter(|(_, bound, _)| *bound)
    .map(|(listener, _, size)| (listener, size))
    .collect();
    let fitted = fd_limit::fit_budgets(&wanted, OPS_CONNECTIONS);
    let budgets = BudgetMetrics::new(&state.metrics);
    let budget = |listener: &'static str| {
        let size = wanted
            .iter()
            .zip(&fitted)
            .find(|((name, _), _)| *name == listener)
            .map_or(1, |(_, size)| *size);
        budgets.budget(listener, size)
    };
    let deadlines = Deadlines {
        idle: server.idle_timeout,
        body: server.body_timeout,
        write_stall: server.write_timeout,
    };
    let router = Arc::new(Router::new(state.clone()));
    let threads = Some(Arc::new(match server.request_threads {
        Some(count) => RequestThreads::new(count)?,
        None => RequestThreads::per_two_cores()?,
    }));
    let requests = Connections {
        tls: None,
        threads: threads.clone(),
    };
    if let Some(tcp) = listeners.api_tcp {
        let handler = ApiHandler {
            router: router.clone(),
            kind: ListenerKind::Tcp {
                require_client_header: server.require_client_header,
            },
            origin: None,
        };
        tasks.spawn(listener::serve(
            "tcp",
            tcp,
            handler,
            budget("tcp"),
            deadlines,
            requests.clone(),
            cancel.clone(),
        ));
    }
    if let Some(UnixSocket { listener, path }) = listeners.api_unix {
        let handler = ApiHandler {
            router: router.clone(),
            kind: ListenerKind::Unix,
            origin: None,
        };
        let serving = listener::serve(
            "unix",
            listener,
            handler,
            budget("unix"),
            deadlines,
            requests.clone(),
            cancel.clone(),
        );
        tasks.spawn(async move {
            serving.await;
            UnixSocket::remove_file(&path);
        });
    }
    let compat_listeners = listeners
        .compat
        .map(|listener| (None, listener))
        .into_iter()
        .chain(
            listeners
                .app_compat
                .into_iter()
                .map(|(app, listener)| (Some(app), listener)),
        );
    // The compatible listeners share one budget, apart from the API's.
    let compat_budget = any_compat.then(|| budget("compat"));
    for (pinned, listener) in compat_listeners {
        let handler = CompatHandler {
            state: Arc::new(CompatState::new(state.clone(), pinned)),
            origin: None,
        };
        tasks.spawn(listener::serve(
            "compat",
            listener,
            handler,
            compat_budget
                .clone()
                .expect("a compatible listener is bound"),
            deadlines,
            Connections {
                tls: compat_tls.clone(),
                threads: threads.clone(),
            },
            cancel.clone(),
        ));
    }
    // Configuration pairs remote_listen with remote_tls: never in clear.
    if let (Some(remote), Some(tls)) = (listeners.remote, remote_tls) {
        let handler = ApiHandler {
            router: router.clone(),
            kind: ListenerKind::Remote,
            origin: None,
        };
        tasks.spawn(listener::serve(
            "remote",
            remote,
            handler,
            budget("remote"),
            deadlines,
            Connections {
                tls: Some(tls),
                threads,
            },
            cancel.clone(),
        ));
    }
    if let Some(callback) = listeners.callback {
        let handler = CallbackHandler {
            broker: state.broker.clone(),
        };
        tasks.spawn(listener::serve(
            "callback",
            callback,
            handler,
            budget("callback"),
            deadlines,
            Connections::default(),
            cancel.clone(),
        ));
    }
    if let Some(metrics) = listeners.metrics {
        let handler = OpsHandler {
            broker: state.broker.clone(),
            metrics: state.metrics.clone(),
        };
        tasks.spawn(listener::serve(
            "metrics",
            metrics,
            handler,
            budgets.budget("metrics", OPS_CONNECTIONS),
            deadlines,
            Connections::default(),
            cancel.clone(),
        ));
    }
    Ok(())
}
