//! The `wxbroker` binary: parses the command line, loads configuration,
//! sets up logging, and runs the chosen command. Exit codes: 0 success,
//! 1 runtime failure, 2 usage or configuration error.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use http::Method;
use wxbroker::cli::{Cli, Command, DemoArgs, SimulateArgs, TokenArgs};
use wxbroker::client::{self, Target};
use wxbroker::config::{Config, LogFormat};
use wxbroker::simulator::{AccountKind, SimConfig, Simulator};
use wxbroker::{demo, logging, Listeners};

const RUNTIME_FAILURE: u8 = 1;
const CONFIG_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(RUNTIME_FAILURE);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(&args.config.config).await,
            Command::CheckConfig(args) => check_config(&args.config),
            Command::Demo(args) => report(run_demo(args).await),
            Command::Simulate(args) => report(simulate(args).await),
            Command::Token(args) => report(token(args).await),
        }
    })
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(RUNTIME_FAILURE)
        }
    }
}

async fn serve(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    logging::init(config.log.format, &config.log.level);
    report(serve_config(&config).await)
}

async fn serve_config(config: &Config) -> anyhow::Result<()> {
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let listeners = Listeners::bind(&config.server).await?;
    wxbroker::run(config, listeners, shutdown_signal()).await?;
    Ok(())
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            print!("{}", config.render_effective());
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(RUNTIME_FAILURE)
        }
    }
}

async fn run_demo(args: DemoArgs) -> anyhow::Result<()> {
    logging::init(LogFormat::Pretty, "info");
    let simulator = demo::simulator(args.lifetime);
    let sim_listener = tokio::net::TcpListener::bind(args.simulator_listen)
        .await
        .with_context(|| format!("simulator {}", args.simulator_listen))?;
    let sim_url = format!("http://{}", sim_listener.local_addr()?);
    let (stop_sim, sim_stopped) = tokio::sync::oneshot::channel::<()>();
    let sim_task = tokio::spawn(simulator.serve(sim_listener, async move {
        let _ = sim_stopped.await;
    }));
    let config = demo::config(
        &sim_url,
        args.listen,
        &args.socket,
        args.metrics_listen,
        args.lifetime,
    )?;
    let listeners = Listeners::bind(&config.server)
        .await
        .context("binding the demo's listeners (pass --listen/--metrics-listen 127.0.0.1:0 if the ports are taken)")?;
    let listen = listeners.api_tcp_addr().unwrap_or(args.listen);
    let metrics = listeners.metrics_addr().unwrap_or(args.metrics_listen);
    println!(
        "{}",
        demo::banner(listen, &args.socket, metrics, &sim_url, args.lifetime)
    );
    wxbroker::run(&config, listeners, shutdown_signal()).await?;
    let _ = stop_sim.send(());
    let _ = sim_task.await;
    Ok(())
}

async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    logging::init(LogFormat::Pretty, "info");
    let simulator = Simulator::new(SimConfig {
        token_lifetime: args.token_lifetime,
        classic_overlap: args.overlap,
        stable_window: args.stable_window,
        daily_limit: args.daily_limit,
        ..SimConfig::default()
    });
    let accounts = if args.accounts.is_empty() {
        vec![wxbroker::cli::SimAccount {
            appid: "wxdemo0000000001".into(),
            secret: "demo-secret".into(),
            wecom: false,
        }]
    } else {
        args.accounts
    };
    for account in &accounts {
        let kind = if account.wecom {
            AccountKind::Wecom
        } else {
            AccountKind::Wechat
        };
        simulator.add_account(&account.appid, &account.secret, kind);
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("simulator {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("wechat simulator on http://{addr}");
    for account in &accounts {
        println!(
            "  account {} ({})",
            account.appid,
            if account.wecom { "wecom" } else { "wechat" }
        );
    }
    println!("  admin: http://{addr}/__sim/calls");
    simulator.serve(listener, shutdown_signal()).await?;
    Ok(())
}

async fn token(args: TokenArgs) -> anyhow::Result<()> {
    let target = match args.socket {
        Some(path) => Target::Unix(path),
        None => Target::Tcp(args.url),
    };
    let path = match &args.app {
        Some(app) => format!("/v1/apps/{app}/token?format=text"),
        None => "/v1/token?format=text".to_owned(),
    };
    let reply = client::send(
        &target,
        Method::GET,
        &path,
        &args.client,
        None,
        args.timeout,
    )
    .await?;
    if reply.status.is_success() {
        println!("{}", String::from_utf8_lossy(&reply.body).trim_end());
        return Ok(());
    }
    let message = serde_json::from_slice::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|body| body["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&reply.body).into_owned());
    anyhow::bail!(
        "the broker at {target} answered {}: {message}",
        reply.status
    )
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
