//! Real Redis topologies for the fleet's tests (DESIGN.md section 14): a
//! primary with a replica watched by three sentinels, a three-master
//! Redis Cluster, a password-protected and a TLS Redis. Every process is
//! a child of the test on free loopback ports, killed (by its own handle)
//! on drop; every wait is bounded.

use std::future::Future;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use super::{free_port, WAIT};

/// One `redis-server` or `redis-sentinel` child.
pub struct RedisProcess {
    pub port: u16,
    child: Option<Child>,
    pub dir: tempfile::TempDir,
}

impl RedisProcess {
    /// `program args…` with its output in `dir/log`; waits until its port
    /// accepts connections.
    pub async fn spawn(program: &str, args: &[String], port: u16, dir: tempfile::TempDir) -> Self {
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} runs (make test installs it): {e}"));
        let process = RedisProcess {
            port,
            child: Some(child),
            dir,
        };
        wait_async(&format!("{program} on port {port}"), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        process
    }

    /// A `redis-server` on a free port without persistence, with `extra`
    /// options.
    pub async fn server(extra: &[&str]) -> Self {
        Self::server_on(free_port(), extra).await
    }

    pub async fn server_on(port: u16, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--dir",
            &dir.path().display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn("redis-server", &args, port, dir).await
    }

    /// SIGKILL: no goodbye to replicas or sentinels.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls the async `condition` every 50 ms until it holds, failing after
/// [`WAIT`].
pub async fn wait_async<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_async_within(what, WAIT, condition).await;
}

/// [`wait_async`], failing after `limit`.
pub async fn wait_async_within<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if tokio::time::timeout(Duration::from_secs(2), condition())
            .await
            .unwrap_or(false)
        {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One command against `url`, bounded; `None` when the node does not
/// answer or answers with an error.
pub async fn ask(url: &str, command: &redis::Cmd) -> Option<Value> {
    let run = async {
        let client = redis::Client::open(url).ok()?;
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        command.query_async::<Value>(&mut connection).await.ok()
    };
    tokio::time::timeout(Duration::from_secs(2), run)
        .await
        .ok()
        .flatten()
}

/// The string value of `key` on the node at `url`.
pub async fn get(url: &str, key: &str) -> Option<String> {
    match ask(url, redis::cmd("GET").arg(key)).await? {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        _ => None,
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(text) | Value::VerbatimString { text, .. } => text.clone(),
        _ => String::new(),
    }
}

fn length(value: Option<Value>) -> usize {
    match value {
        Some(Value::Array(items)) => items.len(),
        _ => 0,
    }
}

pub const MASTER: &str = "wxmaster";

/// A primary, its replica, and three sentinels watching them with a
/// quorum of two, failing over one second after the primary goes silent.
pub struct SentinelSetup {
    pub primary: RedisProcess,
    pub replica: RedisProcess,
    pub sentinels: Vec<RedisProcess>,
}

impl SentinelSetup {
    pub async fn start() -> SentinelSetup {
        Self::start_with_password(None).await
    }

    /// With `password`, the primary and the replica require it (the
    /// sentinels themselves do not, as is common).
    pub async fn start_with_password(password: Option<&str>) -> SentinelSetup {
        let auth: Vec<&str> = match password {
            Some(password) => vec!["--requirepass", password, "--masterauth", password],
            None => Vec::new(),
        };
        let primary = RedisProcess::server(&auth).await;
        let replica_of = primary.port.to_string();
        let mut replica_args = vec!["--replicaof", "127.0.0.1", replica_of.as_str()];
        replica_args.extend(&auth);
        let replica = RedisProcess::server(&replica_args).await;
        // Sentinels learn about replicas from the primary's INFO, asked
        // every 10 s: started once the replica is in sync, they know it
        // at once, and a failover can promote it.
        let replica_url = match password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/0", replica.port),
            None => replica.url(),
        };
        wait_async("the replica to sync", || async {
            ask(&replica_url, redis::cmd("INFO").arg("replication"))
                .await
                .is_some_and(|info| text(&info).contains("master_link_status:up"))
        })
        .await;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(sentinel(primary.port, password).await);
        }
        let setup = SentinelSetup {
            primary,
            replica,
            sentinels,
        };
        for sentinel in &setup.sentinels {
            let url = sentinel.url();
            wait_async(
                "the sentinels to know each other and the replica",
                || async {
                    let others =
                        ask(&url, redis::cmd("SENTINEL").arg("sentinels").arg(MASTER)).await;
                    let replicas =
                        ask(&url, redis::cmd("SENTINEL").arg("replicas").arg(MASTER)).await;
                    length(others) == 2 && length(replicas) == 1
                },
            )
            .await;
        }
        setup
    }

    /// `redis+sentinel://` naming the three sentinels.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|sentinel| format!("127.0.0.1:{}", sentinel.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER}", sentinels.join(","))
    }

    /// The primary's port according to the first sentinel that answers.
    pub async fn primary_port(&self) -> Option<u16> {
        for sentinel in &self.sentinels {
            let answer = ask(
                &sentinel.url(),
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(MASTER),
            )
            .await;
            if let Some(Value::Array(parts)) = answer {
                if let Some(port) = parts.get(1) {
                    return text(port).parse().ok();
                }
            }
        }
        None
    }
}

async fn sentinel(primary_port: u16, password: Option<&str>) -> RedisProcess {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sentinel.conf");
    std::fs::write(
        &config,
        format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
             sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n\
             sentinel down-after-milliseconds {MASTER} 1000\n\
             sentinel failover-timeout {MASTER} 10000\n{}",
            dir.path().display(),
            password.map_or(String::new(), |password| format!(
                "sentinel auth-pass {MASTER} {password}\n"
            ))
        ),
    )
    .unwrap();
    RedisProcess::spawn("redis-sentinel", &[config.display().to_string()], port, dir).await
}

/// A free port whose cluster bus port (+10000) is free too, both below
/// the ephemeral range.
fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = free_port();
        if port < 22_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair for a cluster node");
}

/// Three masters (no replicas) sharing the 16384 slots the way
/// `redis-cli --cluster create` splits them.
pub struct ClusterSetup {
    pub nodes: Vec<RedisProcess>,
}

impl ClusterSetup {
    pub async fn start() -> ClusterSetup {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_cluster_port();
            // Relative to the node's own directory (its `--dir`).
            nodes.push(
                RedisProcess::server_on(
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ],
                )
                .await,
            );
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let created = tokio::time::timeout(
            WAIT,
            tokio::process::Command::new("redis-cli")
                .args(["--cluster", "create"])
                .args(&addresses)
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .stdin(Stdio::null())
                .output(),
        )
        .await
        .expect("redis-cli --cluster create finishes")
        .expect("redis-cli runs (make test installs redis-tools)");
        assert!(
            created.status.success(),
            "cluster create failed: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        for node in &nodes {
            let url = node.url();
            wait_async("the cluster to be ok", || async {
                ask(&url, redis::cmd("CLUSTER").arg("INFO"))
                    .await
                    .is_some_and(|info| text(&info).contains("cluster_state:ok"))
            })
            .await;
        }
        ClusterSetup { nodes }
    }

    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// Which node (index) serves `slot`, as `--cluster create` assigns
    /// three masters: 0-5460, 5461-10922, 10923-16383.
    pub fn node_of_slot(slot: u16) -> usize {
        match slot {
            0..=5460 => 0,
            5461..=10922 => 1,
            _ => 2,
        }
    }

    /// The node a key's value is on: the one that answers GET without
    /// redirecting.
    pub async fn value_on_owner(&self, key: &str) -> Option<(usize, String)> {
        for (index, node) in self.nodes.iter().enumerate() {
            if let Some(value) = get(&node.url(), key).await {
                return Some((index, value));
            }
        }
        None
    }
}

/// Redis Cluster's hash slot of `key`: CRC16 (XMODEM) of its hash tag
/// (or of the whole key), modulo 16384.
pub fn key_slot(key: &str) -> u16 {
    let hashed = key
        .find('{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.find('}')
                .filter(|close| *close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for byte in hashed.bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// A Redis speaking only TLS, with a certificate for `localhost` from a
/// throwaway CA made in `certs` (`wxbroker tls init`, whose `ca.pem` the
/// broker is then given).
pub async fn tls_server(certs: &Path) -> RedisProcess {
    wxbroker::tls::init(certs).expect("tls init");
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| certs.join(name).display().to_string();
    let args: Vec<String> = [
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.path().display().to_string(),
        "--tls-cert-file",
        &file(wxbroker::tls::CERT_FILE),
        "--tls-key-file",
        &file(wxbroker::tls::KEY_FILE),
        "--tls-ca-cert-file",
        &file(wxbroker::tls::CA_FILE),
        "--tls-auth-clients",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    RedisProcess::spawn("redis-server", &args, port, dir).await
}
