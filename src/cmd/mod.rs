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

use wxbroker::errors::Chain;

/// A runtime failure: the command ran and did not succeed.
pub const RUNTIME_FAILURE: u8 = 1;
/// A usage or configuration error.
pub const CONFIG_ERROR: u8 = 2;

/// Success, or a runtime failure with the error printed as one line,
/// outermost first, each cause once.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", Chain(err.as_ref()));
            ExitCode::from(RUNTIME_FAILURE)
        }
    }
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
