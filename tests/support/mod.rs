//! Test support: a simulator and a broker on ephemeral ports (TCP, a Unix
//! socket in a temp dir, the operations listener), clients for both API
//! transports, and bounded waits.

#![allow(dead_code)]

pub mod as_user;
pub mod process;
pub mod redis_ha;
pub mod scripted;
pub mod sdk;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Method;
use serde_json::Value;
use tokio::net::TcpListener;
use wxbroker::client::{self, Target};
use wxbroker::config::Config;
use wxbroker::server::UnixSocket;
use wxbroker::simulator::{AccountKind, SimConfig, SimHandle, Simulator};
use wxbroker::{Daemon, Listeners, Tuning};

pub const APPID: &str = "wx1234567890abcdef";
pub const SECRET: &str = "s3cr3t-for-tests-0123456789abcdef";
pub const STABLE_APPID: &str = "wxfedcba0987654321";
pub const STABLE_SECRET: &str = "stable-s3cr3t-0123456789abcdef";
pub const OTHER_APPID: &str = "wx0000000000other1";
pub const OTHER_SECRET: &str = "other-s3cr3t-0123456789abcdef";
pub const CORPID: &str = "ww1234567890abcdef";
pub const CORPSECRET: &str = "corp-s3cr3t-0123456789abcdef";

/// Bounds every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(20);

pub async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("timed out waiting")
}

/// Polls `condition` every 20 ms until it holds, failing after [`WAIT`].
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A simulator holding the test accounts.
pub async fn simulator(config: SimConfig) -> SimHandle {
    let sim = Simulator::new(config);
    sim.add_account(APPID, SECRET, AccountKind::Wechat);
    sim.add_account(STABLE_APPID, STABLE_SECRET, AccountKind::Wechat);
    sim.add_account(OTHER_APPID, OTHER_SECRET, AccountKind::Wechat);
    sim.add_account(CORPID, CORPSECRET, AccountKind::Wecom);
    sim.spawn().await.expect("simulator starts")
}

/// A `[[apps]]` entry for the classic test account against `sim`.
pub fn classic_app(name: &str, sim: &SimHandle, extra: &str) -> String {
    format!(
        "[[apps]]\nname = \"{name}\"\nappid = \"{APPID}\"\nsecret = \"{SECRET}\"\napi_base = \"{}\"\n{extra}\n",
        sim.base_url()
    )
}

pub fn stable_app(name: &str, sim: &SimHandle, extra: &str) -> String {
    format!(
        "[[apps]]\nname = \"{name}\"\ngrant = \"stable\"\nappid = \"{STABLE_APPID}\"\nsecret = \"{STABLE_SECRET}\"\napi_base = \"{}\"\n{extra}\n",
        sim.base_url()
    )
}

pub fn wecom_app(name: &str, sim: &SimHandle, extra: &str) -> String {
    format!(
        "[[apps]]\nname = \"{name}\"\nkind = \"wecom\"\nappid = \"{CORPID}\"\nsecret = \"{CORPSECRET}\"\napi_base = \"{}\"\n{extra}\n",
        sim.base_url()
    )
}

/// A broker on ephemeral ports, with its temp dir.
pub struct Broker {
    pub daemon: Option<Daemon>,
    pub config: Config,
    pub tcp: SocketAddr,
    pub metrics: SocketAddr,
    pub socket: PathBuf,
    pub dir: tempfile::TempDir,
    /// The WeChat-compatible listener, when [`Options::compat`] asked for one.
    pub compat: Option<SocketAddr>,
    /// Per-app compatible listeners (`compat_listen`), by app name.
    pub app_compat: Vec<(String, SocketAddr)>,
    /// The remote listener, when the `[server]` lines set `remote_listen`.
    pub remote: Option<SocketAddr>,
    http: reqwest::Client,
}

/// What a test needs to say about the broker beyond its apps.
#[derive(Default)]
pub struct Options {
    /// Extra `[server]` lines.
    pub server: String,
    /// The whole `[store]` section; memory when empty.
    pub store: String,
    /// Reuse this directory (for restarts).
    pub dir: Option<tempfile::TempDir>,
    /// Also bind the WeChat-compatible listener on an ephemeral port.
    pub compat: bool,
    /// Bind the compatible listener here instead (transparent mode uses
    /// 127.0.0.1:443).
    pub compat_addr: Option<SocketAddr>,
    /// Non-default fixed behaviour (a short proxy timeout).
    pub tuning: Option<Tuning>,
}

impl Broker {
    pub async fn start(apps: &str) -> Broker {
        Self::start_with(apps, Options::default()).await
    }

    pub async fn start_with(apps: &str, options: Options) -> Broker {
        let dir = options
            .dir
            .unwrap_or_else(|| tempfile::tempdir().expect("temp dir"));
        let socket = dir.path().join("wxbroker.sock");
        let store = if options.store.is_empty() {
            "[store]\nbackend = \"memory\"\n".to_owned()
        } else {
            options
                .store
                .replace("{dir}", &dir.path().display().to_string())
        };
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nunix_socket = \"{}\"\nmetrics_listen = \"127.0.0.1:1\"\ntoken_wait_timeout = \"3s\"\n{}{}\n{store}\n{apps}",
            socket.display(),
            // The listener itself is bound below; the key tells the
            // configuration there is one (compat_tls needs it).
            if options.compat {
                "wechat_compat_listen = \"127.0.0.1:0\"\n"
            } else {
                ""
            },
            options.server,
        );
        let config = Config::from_toml_str("test.toml", &text).expect("test config is valid");
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ops = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listeners =
            Listeners {
                api_tcp: Some(api),
                api_unix: Some(UnixSocket::bind(&socket, 0o600, None).await.unwrap()),
                metrics: Some(ops),
                compat: if options.compat {
                    let addr = options
                        .compat_addr
                        .unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
                    Some(TcpListener::bind(addr).await.unwrap_or_else(|e| {
                        panic!("binding the compatible listener on {addr}: {e}")
                    }))
                } else {
                    None
                },
                app_compat: {
                    let mut bound = Vec::new();
                    for app in &config.apps {
                        if let Some(addr) = app.compat_listen {
                            let listener = TcpListener::bind(addr).await.unwrap();
                            bound.push((app.name.clone(), listener));
                        }
                    }
                    bound
                },
                remote: match config.server.remote_listen {
                    Some(addr) => Some(TcpListener::bind(addr).await.unwrap()),
                    None => None,
                },
                callback: None,
            };
        let tcp = listeners.api_tcp_addr().unwrap();
        let metrics = listeners.metrics_addr().unwrap();
        let compat = listeners.compat_addr();
        let remote = listeners.remote_addr();
        let app_compat = config
            .apps
            .iter()
            .filter_map(|app| Some((app.name.clone(), listeners.app_compat_addr(&app.name)?)))
            .collect();
        // No quota poll unless a test asks for one: its calls would show
        // in the simulator's counts.
        let tuning = options.tuning.unwrap_or(Tuning {
            quota_poll: None,
            ..Tuning::default()
        });
        let daemon = wxbroker::start_with(&config, listeners, tuning)
            .await
            .expect("broker starts");
        Broker {
            daemon: Some(daemon),
            config,
            tcp,
            metrics,
            socket,
            dir,
            compat,
            app_compat,
            remote,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(WAIT)
                .build()
                .unwrap(),
        }
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("broker running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.tcp)
    }

    /// GET over TCP with a client header; returns status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = within(
            self.http
                .get(self.url(path))
                .header("wxbroker-client", "tests")
                .send(),
        )
        .await
        .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let response = within(
            self.http
                .post(self.url(path))
                .header("wxbroker-client", "tests")
                .header("content-type", "application/json")
                .body(body.to_owned())
                .send(),
        )
        .await
        .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The HTTP client the helpers use (no proxy, bounded by [`WAIT`]).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `http://ADDR{path}` on the WeChat-compatible listener.
    pub fn compat_url(&self, path: &str) -> String {
        let addr = self.compat.expect("started with Options::compat");
        format!("http://{addr}{path}")
    }

    /// `http://ADDR{path}` on `app`'s own compatible listener.
    pub fn app_compat_url(&self, app: &str, path: &str) -> String {
        let (_, addr) = self
            .app_compat
            .iter()
            .find(|(name, _)| name == app)
            .expect("the app has compat_listen");
        format!("http://{addr}{path}")
    }

    /// One request over TCP with a client header; returns status, headers
    /// and the raw body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> (u16, http::HeaderMap, bytes::Bytes) {
        let mut request = self
            .http
            .request(method, self.url(path))
            .header("wxbroker-client", "tests");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body.to_vec());
        }
        let response = within(request.send()).await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = within(response.bytes()).await.expect("body");
        (status, headers, body)
    }

    /// The value of a counter or gauge in /metrics, 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().unwrap_or(0.0))
    }

    /// The app's token over TCP; panics unless 200.
    pub async fn token(&self, app: &str) -> String {
        let (status, body) = self.get(&format!("/v1/apps/{app}/token")).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// One request over the Unix socket.
    pub async fn unix(&self, method: Method, path: &str, body: Option<&str>) -> (u16, Value) {
        let reply = client::send(
            &Target::Unix(self.socket.clone()),
            method,
            path,
            "tests",
            body.map(|b| bytes::Bytes::from(b.to_owned())),
            WAIT,
        )
        .await
        .expect("unix request");
        (
            reply.status.as_u16(),
            serde_json::from_slice(&reply.body).unwrap_or(Value::Null),
        )
    }

    /// The operations listener's /metrics text.
    pub async fn metrics_text(&self) -> String {
        within(async {
            self.http
                .get(format!("http://{}/metrics", self.metrics))
                .send()
                .await?
                .text()
                .await
        })
        .await
        .expect("metrics")
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(daemon) = self.daemon.take() {
            within(daemon.shutdown()).await;
        }
        self.dir
    }
}

/// A `wxbroker serve` child process, killed (by its own handle) on drop.
pub struct ChildBroker {
    pub child: std::process::Child,
    pub stderr_path: PathBuf,
}

impl ChildBroker {
    /// Starts the real binary on `config_path`, logging to a file.
    pub fn spawn(config_path: &std::path::Path, log_level: &str) -> ChildBroker {
        let stderr_path = config_path.with_extension(format!("{}.log", std::process::id()));
        let stderr = std::fs::File::create(&stderr_path).expect("log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_wxbroker"))
            .args(["serve", "--config"])
            .arg(config_path)
            .env("RUST_LOG", log_level)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("wxbroker starts");
        ChildBroker { child, stderr_path }
    }

    /// Waits until `url` answers 200; fails with the daemon's log if it
    /// exits or never gets there.
    pub async fn wait_ready(&mut self, url: &str) {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("wxbroker exited with {status}:\n{}", self.log());
            }
            let ok = client
                .get(url)
                .header("wxbroker-client", "tests")
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{url} never answered 200:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGHUP: reload the configuration.
    pub fn hangup(&self) {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        self.child.wait().expect("child exits")
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// A free loopback port (bound then released), below the ephemeral range
/// (32768 and up on Linux): the kernel may hand a port from that range to
/// any outgoing connection, even to a client connecting to that very port
/// while nothing listens there (it then connects to itself), so a server
/// started on it later, or restarted, could find it taken.
pub fn free_port() -> u16 {
    use rand::Rng;
    for _ in 0..10_000 {
        let port = rand::thread_rng().gen_range(10_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below the ephemeral range");
}

/// A real `redis-server` on a free loopback port, with no persistence;
/// killed (by its own handle) on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        Self::start_on(free_port()).await
    }

    pub async fn start_on(port: u16) -> RedisServer {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (make test installs it)");
        let server = RedisServer {
            port,
            child: Some(child),
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        while !server.answers_ping().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server never answered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    async fn answers_ping(&self) -> bool {
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if stream.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut answer = [0u8; 7];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut answer)).await,
            Ok(Ok(_)) if &answer == b"+PONG\r\n"
        )
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGKILL; the data is gone with it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    pub fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // SIGKILL ends a stopped process too, but a continued one
            // exits without leaving a zombie-in-waiting behind.
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// The `[store]` section for a Redis store at `url`.
pub fn redis_store(url: &str) -> String {
    format!("[store]\nbackend = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"test\"\n")
}

/// A scripted upstream that issues a fixed classic token and never answers
/// anything else: the proxy's timeout is the only way out. Stops (with all
/// its connections) when dropped.
pub struct StallingUpstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// The token [`StallingUpstream`] issues.
pub const STALL_TOKEN: &str = "87_stalling-upstream-token-0123456789";

impl StallingUpstream {
    pub async fn start() -> StallingUpstream {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service =
                    service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                        if request.uri().path() != "/cgi-bin/token" {
                            std::future::pending::<()>().await;
                        }
                        let body =
                            format!("{{\"access_token\":\"{STALL_TOKEN}\",\"expires_in\":7200}}");
                        let mut response = http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(body),
                        ));
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(response)
                    });
                connections.spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        StallingUpstream { addr, task }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for StallingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Everything `tracing` (and `log`) emits in this test process, at every
/// level, for tests asserting that a token never reaches a log line. The
/// first call installs the collector.
pub fn captured_logs() -> String {
    use std::sync::{Mutex, OnceLock};

    static LOGS: OnceLock<std::sync::Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let logs = LOGS.get_or_init(|| {
        let logs = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .try_init();
        logs
    });
    let bytes = logs.lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&bytes).into_owned()
}

struct LogSink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The JS-SDK signature WeChat's JS-SDK checks for a signed config object
/// (`nonceStr`, `timestamp`) of `page` made with `ticket`, computed here
/// apart from the broker's own code.
pub fn expected_signature(ticket: &str, config: &Value, page: &str) -> String {
    use sha1::Digest;
    let signed = format!(
        "jsapi_ticket={ticket}&noncestr={}&timestamp={}&url={page}",
        config["nonceStr"].as_str().expect("a nonceStr"),
        config["timestamp"].as_u64().expect("a numeric timestamp")
    );
    sha1::Sha1::digest(signed.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `size` brokers of `apps` sharing the store `store` (a `[store]` table).
pub async fn fleet(apps: &str, store: &str, size: usize) -> Vec<std::sync::Arc<Broker>> {
    let mut brokers = Vec::new();
    for _ in 0..size {
        let options = Options {
            store: store.to_owned(),
            ..Options::default()
        };
        brokers.push(std::sync::Arc::new(Broker::start_with(apps, options).await));
    }
    brokers
}

/// Waits until every broker serves the same token for `app`; returns it.
pub async fn converged(brokers: &[std::sync::Arc<Broker>], app: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut tokens = std::collections::HashSet::new();
        for broker in brokers {
            tokens.insert(broker.token(app).await);
        }
        if tokens.len() == 1 {
            return tokens.into_iter().next().unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fleet never converged on {app}: {tokens:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
