//! The command line's failures, through the real binary: one line on
//! stderr, the error first and then each of its causes, each said once.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_wxbroker");

/// `wxbroker {args}`: its exit code and stderr. Every command run here
/// fails at once (no broker to reach), well inside its own `--timeout`.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("wxbroker runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn an_unreachable_broker_is_one_line_naming_the_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let socket = socket.to_str().unwrap();
    // What the system says of a socket that is not there.
    let cause = std::os::unix::net::UnixStream::connect(socket)
        .expect_err("no socket there")
        .to_string();
    for command in [
        &["token", "--socket", socket, "--timeout", "5s"][..],
        &["probe", "livez", "--socket", socket, "--timeout", "5s"][..],
        &[
            "quota",
            "--app",
            "shop",
            "--socket",
            socket,
            "--timeout",
            "5s",
        ][..],
    ] {
        let (code, stderr) = run(command);
        assert_eq!(code, Some(1), "{command:?}: {stderr}");
        assert_eq!(
            stderr,
            format!("error: cannot connect to the broker at unix:{socket}: {cause}\n"),
            "{command:?}"
        );
    }
}

#[test]
fn clear_quota_without_confirm_is_a_usage_error() {
    let (code, stderr) = run(&["clear-quota", "--app", "shop"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: clear-quota resets every daily quota of app shop's account")
            && stderr.contains("add --confirm to go ahead"),
        "{stderr}"
    );
}
