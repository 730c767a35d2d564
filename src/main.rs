//! The `wxbroker` binary: parses the command line and hands it to the
//! command's module in [`cmd`]. Exit codes: 0 success, 1 runtime failure,
//! 2 usage or configuration error.

use std::process::ExitCode;

use clap::Parser;
use wxbroker::cli::{Cli, Command, TlsCommand};
use wxbroker::errors::Chain;

mod cmd;

use cmd::{report, RUNTIME_FAILURE};

/// jemalloc, whose background thread hands freed pages back to the system
/// within seconds: glibc's malloc kept the memory of a connection flood
/// (110 MiB for 5,000 connections) after the flood was over.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = wxbroker::process_guard::forbid_core_dumps() {
        return report(Err(err.into()));
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {}", Chain(&err));
            return ExitCode::from(RUNTIME_FAILURE);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => cmd::serve::run(&args).await,
            Command::CheckConfig(args) => cmd::check_config::run(&args.config),
            Command::Demo(args) => report(cmd::demo::run(args).await),
            Command::Simulate(args) => report(cmd::simulate::run(args).await),
            Command::Token(args) => report(cmd::token::run(args).await),
            Command::Probe(args) => report(cmd::probe::run(args).await),
            Command::Quota(args) => report(cmd::diagnostics::quota(args).await),
            Command::ClearQuota(args) => cmd::diagnostics::clear_quota(args).await,
            Command::Rid(args) => report(cmd::diagnostics::rid(args).await),
            Command::Tls(TlsCommand::Init { dir }) => report(cmd::tls::init(&dir)),
        }
    })
}
