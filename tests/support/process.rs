//! The real `wxbroker` binary as a child process: started with a config
//! file, its output kept in a file for failure messages, killed when the
//! handle is dropped (only this child, by its handle).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use tokio::process::{Child, Command};

use super::WAIT;

/// The binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_wxbroker");

/// A running `wxbroker` child.
pub struct Process {
    pub child: Child,
    /// stdout and stderr, for messages when a test fails.
    pub output: PathBuf,
}

/// `wxbroker {args}` with output going to `output`, no inherited
/// `RUST_LOG` or `NOTIFY_SOCKET`, and `env` added.
pub fn spawn(args: &[&str], env: &[(&str, &str)], output: &Path) -> Process {
    let log = std::fs::File::create(output).expect("output file");
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true);
    Process {
        child: command.spawn().expect("wxbroker starts"),
        output: output.to_owned(),
    }
}

/// Runs `wxbroker {args}` to completion (bounded by [`WAIT`]) and returns
/// its status and combined output.
pub async fn run(args: &[&str], env: &[(&str, &str)], dir: &Path) -> (ExitStatus, String) {
    let output = dir.join(format!("run-{}.log", args.join("-").replace('/', "_")));
    let mut process = spawn(args, env, &output);
    let status = process.wait().await;
    (status, process.output())
}

impl Process {
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Waits for the child to exit, failing the test after [`WAIT`].
    pub async fn wait(&mut self) -> ExitStatus {
        match tokio::time::timeout(WAIT, self.child.wait()).await {
            Ok(status) => status.expect("waiting for wxbroker"),
            Err(_) => panic!("wxbroker did not exit in time; output:\n{}", self.output()),
        }
    }

    /// Sends SIGTERM, as systemd and the kubelet do to stop it.
    pub async fn terminate(&self) {
        let pid = self.child.id().expect("the child is running");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid} failed");
    }
}
