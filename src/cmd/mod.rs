//! One module per command of the `wxbroker` binary; `main.rs` parses the
//! command line and hands each command to its module here. What every
//! command shares: the exit codes, how a failure is printed, and the
//! shutdown signal.

pub mod check_config;
pub mod demo;
pub mod diagnostics;
pub mod probe;
pub mod serve;
pub mod simulate;
pub mod tls;
pub mod token;

use std::process::ExitCode;

/// A runtime failure: the command ran and did not succeed.
pub const RUNTIME_FAILURE: u8 = 1;
/// A usage or configuration error.
pub const CONFIG_ERROR: u8 = 2;

/// Success, or the error printed with its causes and a runtime failure.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", render(&err));
            ExitCode::from(RUNTIME_FAILURE)
        }
    }
}

/// The error and its causes, each once: many of the library's messages
/// already quote their source (for log lines, which show one message).
fn render(err: &anyhow::Error) -> String {
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
