//! What the scale benchmarks share: a `wxbroker serve` child (the release
//! binary) on a file store with one kind's section, and the measurements
//! taken of it through its listeners and `/proc`.
//!
//! Each bench includes this file and uses its part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `wxbroker serve`; stopped (SIGTERM, and waited for) however
/// the bench ends, a failed assertion included.
pub struct ScaleBroker {
    child: Child,
    api: u16,
    metrics: u16,
    compat: u16,
    http: reqwest::Client,
}

impl ScaleBroker {
    /// `binary serve` on a file store in `state` (made 0700), with the
    /// `section` a kind's TOML (a `[[platforms]]` or `[[suites]]` table)
    /// and its callbacks on a listener of their own, whose port is
    /// returned for the simulator's pushes.
    pub fn start(binary: &Path, state: &Path, section: &str) -> (ScaleBroker, u16) {
        let callback = free_port();
        let server = format!("callback_listen = \"127.0.0.1:{callback}\"\n");
        (Self::start_with(binary, state, &server, section), callback)
    }

    /// `binary serve` on a file store in `state` (made 0700) with apps
    /// only: `section` holds `[[apps]]` tables, and there is no callback
    /// listener (it applies only to platforms and suites).
    pub fn start_apps(binary: &Path, state: &Path, section: &str) -> ScaleBroker {
        Self::start_with(binary, state, "", section)
    }

    /// `binary serve` on a file store in `state` with `server` added to
    /// its `[server]` lines and `section` after them.
    fn start_with(binary: &Path, state: &Path, server: &str, section: &str) -> ScaleBroker {
        let (api, metrics, compat) = (free_port(), free_port(), free_port());
        std::fs::create_dir_all(state).unwrap();
        std::fs::set_permissions(state, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let config = state.with_extension("toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{api}\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\n{server}wechat_compat_listen = \"127.0.0.1:{compat}\"\n[store]\nbackend = \"file\"\npath = \"{}\"\n[log]\nlevel = \"warn\"\n{section}",
                state.display(),
            ),
        )
        .expect("config written");
        let child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the release binary runs (cargo build --release --bin wxbroker)");
        ScaleBroker {
            child,
            api,
            metrics,
            compat,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        // The probes are on the operations listener, the API on its own.
        let port = if path == "/livez" || path == "/readyz" {
            self.metrics
        } else {
            self.api
        };
        let response = self
            .http
            .get(format!("http://127.0.0.1:{port}{path}"))
            .header("wxbroker-client", "bench")
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// Waits until `path` answers 200, within `limit`: how long it took.
    pub async fn wait_ok(&self, path: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if let Some((200, _)) = self.get(path).await {
                return started.elapsed();
            }
            assert!(started.elapsed() < limit, "{path} never answered");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until the list at `path` (a `?limit=1` page) totals `count`.
    pub async fn wait_listed(&self, path: &str, count: usize) -> Duration {
        let started = Instant::now();
        let want = format!("\"total\":{count}");
        loop {
            if let Some((200, body)) = self.get(path).await {
                if body.contains(&want) {
                    return started.elapsed();
                }
            }
            assert!(started.elapsed() < Duration::from_secs(120), "never loaded");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// One call of `cgi` through the compatible listener holding `token`:
    /// how long it took, and whether WeChat's answer came back.
    pub async fn compat_call(&self, cgi: &str, token: &str) -> (Duration, bool) {
        let url = format!("http://127.0.0.1:{}{cgi}?access_token={token}", self.compat);
        let started = Instant::now();
        let answered = match self.http.get(url).send().await {
            Ok(response) => response
                .text()
                .await
                .is_ok_and(|body| body.contains("ip_list")),
            Err(_) => false,
        };
        (started.elapsed(), answered)
    }

    pub async fn metrics_text(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics);
        match self.http.get(url).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// The most resident memory the broker has had (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// How many files (sockets included) the broker holds open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|dir| dir.count())
            .unwrap_or(0)
    }

    pub fn stop(self) {
        // Dropped: stopped.
    }
}

impl Drop for ScaleBroker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Fetches a second over `secs` seconds, as `calls` counts them: (max,
/// mean).
pub async fn fetch_rate(calls: impl Fn() -> u64, secs: u64) -> (u64, f64) {
    let start = calls();
    let mut last = start;
    let mut max = 0;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    for _ in 0..secs {
        ticker.tick().await;
        let now = calls();
        max = max.max(now - last);
        last = now;
    }
    (max, (last - start) as f64 / secs as f64)
}

/// The p50 and p99 of `took`, sorted in place.
pub fn p50_p99(took: &mut [Duration]) -> (Duration, Duration) {
    took.sort_unstable();
    let n = took.len() as f64;
    let at = |q: f64| took[((q * n).ceil() as usize).saturating_sub(1)];
    (at(0.50), at(0.99))
}
