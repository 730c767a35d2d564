//! Real WeChat SDKs driving the compatible listener: installs the pinned
//! SDKs (scripts/install-sdks.sh, under target/sdk), runs an SDK driver
//! program (tests/sdk/) that answers one JSON request a line, optionally
//! inside a private mount namespace whose /etc/hosts maps WeChat's hosts to
//! 127.0.0.1 (so only that process sees the mapping), and the TLS files
//! `wxbroker tls init` writes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::{classic_app, simulator, Broker, Options, WAIT};
use wxbroker::simulator::{SimConfig, SimHandle};

/// What an SDK is configured with instead of the app secret: the broker
/// owns the real one.
pub const PLACEHOLDER_SECRET: &str = "anything";

/// Lets the broker refresh as soon as a token is rejected: a revocation
/// seconds after start would otherwise, rightly, be answered `-1` until
/// the default 30 s have passed.
pub const FORCED: &str = "min_forced_interval = \"0s\"";

/// A simulator whose superseded tokens die at once (no overlap), so a
/// token issued behind the broker's back revokes the one it holds.
pub async fn revocable_simulator() -> SimHandle {
    simulator(SimConfig {
        classic_overlap: Duration::ZERO,
        ..SimConfig::default()
    })
    .await
}

/// A broker serving app "shop" (the classic test account) on the
/// compatible listener, with `server` as extra `[server]` lines, and a warm
/// token.
pub async fn compat_broker(sim: &SimHandle, server: &str) -> Broker {
    let broker = Broker::start_with(
        &classic_app("shop", sim, FORCED),
        Options {
            compat: true,
            server: server.to_owned(),
            ..Options::default()
        },
    )
    .await;
    broker.token("shop").await;
    broker
}

/// The first install downloads the SDKs; later calls only read stamps.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The crate's root, where scripts/ and tests/sdk/ live.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where scripts/install-sdks.sh puts the SDKs.
pub fn sdk_dir() -> PathBuf {
    std::env::var_os("WXBROKER_SDK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/sdk"))
}

/// Installs the `python` or `node` SDKs unless already there at their pinned
/// versions. The script takes a lock, so parallel tests wait for one install.
pub async fn install(ecosystem: &str) {
    // Once per test process is enough; the lock also covers other processes.
    static DONE: Mutex<Vec<String>> = Mutex::new(Vec::new());
    if DONE.lock().unwrap().iter().any(|e| e == ecosystem) {
        return;
    }
    let output = tokio::time::timeout(
        INSTALL_TIMEOUT,
        Command::new(repo().join("scripts/install-sdks.sh"))
            .arg(ecosystem)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("SDK install timed out")
    .expect("scripts/install-sdks.sh runs");
    assert!(
        output.status.success(),
        "installing the {ecosystem} SDKs failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    DONE.lock().unwrap().push(ecosystem.to_owned());
}

/// An SDK call that failed, as the SDK reported it.
#[derive(Debug, Clone)]
pub struct SdkFailure {
    /// WeChat's errcode when the SDK raised one.
    pub errcode: Option<i64>,
    pub error: String,
}

/// A running SDK driver (tests/sdk/*), killed by its own handle on drop.
pub struct Driver {
    name: String,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr_path: PathBuf,
    /// Holds the driver's working directory, stderr log and hosts file.
    dir: tempfile::TempDir,
}

/// How a driver process is started.
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Map api.weixin.qq.com and qyapi.weixin.qq.com to 127.0.0.1 for this
    /// process only.
    pub private_hosts: bool,
}

impl Launch {
    /// wechatpy from the installed venv.
    pub fn wechatpy() -> Launch {
        Launch {
            program: sdk_dir().join("python/bin/python"),
            args: vec![repo()
                .join("tests/sdk/wechatpy_driver.py")
                .display()
                .to_string()],
            env: vec![("PYTHONDONTWRITEBYTECODE".into(), "1".into())],
            private_hosts: false,
        }
    }

    /// One of the Node.js SDKs (chosen by the driver's `init`).
    pub fn node() -> Launch {
        Launch {
            program: PathBuf::from("node"),
            args: vec![repo()
                .join("tests/sdk/node_driver.js")
                .display()
                .to_string()],
            env: vec![(
                "NODE_PATH".into(),
                sdk_dir().join("node/node_modules").display().to_string(),
            )],
            private_hosts: false,
        }
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Launch {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    pub fn private_hosts(mut self) -> Launch {
        self.private_hosts = true;
        self
    }
}

impl Driver {
    /// Starts the driver and sends it `init`.
    pub async fn start(name: &str, launch: Launch, init: Value) -> Driver {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr log");
        let mut command = if launch.private_hosts {
            let hosts = dir.path().join("hosts");
            std::fs::write(
                &hosts,
                "127.0.0.1 localhost\n::1 localhost\n127.0.0.1 api.weixin.qq.com\n127.0.0.1 qyapi.weixin.qq.com\n",
            )
            .expect("hosts file");
            // A mount namespace of its own: the bind mount over /etc/hosts is
            // seen by this child alone and disappears with it.
            let mut command = Command::new("unshare");
            command
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
                .arg(&hosts)
                .arg(&launch.program);
            command
        } else {
            Command::new(&launch.program)
        };
        command
            .args(&launch.args)
            .current_dir(dir.path())
            // Requests and axios honour proxy variables; loopback must be direct.
            .env("NO_PROXY", "*")
            .env("no_proxy", "*")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .envs(launch.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{name} driver starts: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut driver = Driver {
            name: name.to_owned(),
            child,
            stdin,
            stdout,
            stderr_path,
            dir,
        };
        let mut init = init;
        init["op"] = json!("init");
        init["cache_dir"] = json!(driver.dir.path().join("cache").display().to_string());
        if let Err(failure) = driver.call(init).await {
            panic!(
                "{name} driver init failed: {failure:?}\n{}",
                driver.stderr()
            );
        }
        driver
    }

    /// One request; the SDK's answer or its failure. A driver that does not
    /// answer within [`WAIT`] (an SDK retrying forever) is killed.
    pub async fn call(&mut self, request: Value) -> Result<Value, SdkFailure> {
        let line = format!("{request}\n");
        let exchange = async {
            self.stdin.write_all(line.as_bytes()).await?;
            self.stdin.flush().await?;
            self.stdout.next_line().await
        };
        let answer = match tokio::time::timeout(WAIT, exchange).await {
            Ok(Ok(Some(answer))) => answer,
            Ok(Ok(None)) | Ok(Err(_)) => {
                return Err(SdkFailure {
                    errcode: None,
                    error: format!("{} driver exited:\n{}", self.name, self.stderr()),
                })
            }
            Err(_) => {
                let _ = self.child.start_kill();
                return Err(SdkFailure {
                    errcode: None,
                    error: format!(
                        "{} driver gave no answer to {request} in {WAIT:?} (killed)",
                        self.name
                    ),
                });
            }
        };
        let answer: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("{} driver wrote {answer:?}: {e}", self.name));
        if answer["ok"] == true {
            Ok(answer["value"].clone())
        } else {
            Err(SdkFailure {
                errcode: answer["errcode"].as_i64(),
                error: answer["error"].as_str().unwrap_or_default().to_owned(),
            })
        }
    }

    /// `call` for `op` with `fields`, panicking with the SDK's own words on
    /// failure.
    pub async fn ok(&mut self, op: &str, fields: Value) -> Value {
        let mut request = fields;
        if request.is_null() {
            request = json!({});
        }
        request["op"] = json!(op);
        match self.call(request).await {
            Ok(value) => value,
            Err(failure) => panic!(
                "{} `{op}` failed (errcode {:?}): {}\n--- driver stderr ---\n{}",
                self.name,
                failure.errcode,
                failure.error,
                self.stderr()
            ),
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

/// The files `wxbroker tls init --dir DIR` writes (DESIGN.md section 12).
pub struct TlsFiles {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Runs `wxbroker tls init` into a fresh directory and finds the CA, the
    /// certificate and its key there.
    pub fn init() -> TlsFiles {
        let dir = tempfile::tempdir().expect("temp dir");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_wxbroker"))
            .args(["tls", "init", "--dir"])
            .arg(dir.path())
            .output()
            .expect("wxbroker runs");
        assert!(
            output.status.success(),
            "`wxbroker tls init --dir` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let ca = dir.path().join("ca.pem");
        assert!(ca.is_file(), "tls init wrote no ca.pem");
        let pems = |wanted: &dyn Fn(&str) -> bool| -> Option<PathBuf> {
            std::fs::read_dir(dir.path())
                .ok()?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|path| path.extension().is_some_and(|e| e == "pem") && *path != ca)
                .find(|path| {
                    let name = path.file_name().unwrap().to_string_lossy().into_owned();
                    wanted(&name)
                })
        };
        let key = pems(&|name| name.contains("key")).expect("tls init wrote a key");
        let cert = pems(&|name| !name.contains("key") && !name.starts_with("ca"))
            .expect("tls init wrote a certificate");
        TlsFiles { dir, ca, cert, key }
    }

    /// The `[server.compat_tls]` table serving these files.
    pub fn server_section(&self) -> String {
        format!(
            "[server.compat_tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            self.cert.display(),
            self.key.display()
        )
    }

    pub fn ca_path(&self) -> &Path {
        &self.ca
    }
}
