//! The `wxbroker` binary: parses the command line, loads configuration,
//! sets up logging, and runs the chosen command. Exit codes: 0 success,
//! 1 runtime failure, 2 usage or configuration error.

use std::future::Future;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use http::Method;
use wxbroker::cli::{
    BrokerArgs, ClearQuotaArgs, Cli, Command, DemoArgs, ProbeArgs, QuotaArgs, RidArgs, ServeArgs,
    SimulateArgs, TlsCommand, TokenArgs,
};
use wxbroker::client::{self, Target};
use wxbroker::config::{Config, LogFormat};
use wxbroker::reload::{ConfigReloads, ReloadError, Requested};
use wxbroker::simulator::{AccountKind, SimConfig, Simulator};
use wxbroker::{demo, logging, notify, Daemon, Listeners};

/// jemalloc, whose background thread hands freed pages back to the system
/// within seconds: glibc's malloc kept the memory of a connection flood
/// (110 MiB for 5,000 connections) after the flood was over.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const RUNTIME_FAILURE: u8 = 1;
const CONFIG_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = wxbroker::process_guard::forbid_core_dumps() {
        return report(Err(err.into()));
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(RUNTIME_FAILURE);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(&args).await,
            Command::CheckConfig(args) => check_config(&args.config),
            Command::Demo(args) => report(run_demo(args).await),
            Command::Simulate(args) => report(simulate(args).await),
            Command::Token(args) => report(token(args).await),
            Command::Probe(args) => report(probe(args).await),
            Command::Quota(args) => report(quota(args).await),
            Command::ClearQuota(args) if !args.confirm => {
                eprintln!(
                    "error: clear-quota resets every daily quota of app {}'s account and spends one of its {} resets a month \
                     (shared with the web console); add --confirm to go ahead",
                    args.app,
                    wxbroker::diagnostics::RESETS_PER_MONTH
                );
                ExitCode::from(CONFIG_ERROR)
            }
            Command::ClearQuota(args) => report(clear_quota(args).await),
            Command::Rid(args) => report(rid(args).await),
            Command::Tls(TlsCommand::Init { dir }) => report(tls_init(&dir)),
        }
    })
}

/// `wxbroker tls init`: what was written, and what to do with it.
fn tls_init(dir: &std::path::Path) -> anyhow::Result<()> {
    let issued = wxbroker::tls::init(dir)?;
    println!("wrote {}", issued.ca.display());
    println!("wrote {}", issued.cert.display());
    println!("wrote {} (mode 0600)", issued.key.display());
    println!();
    println!("serve the compatible listeners over TLS:");
    println!("  [server.compat_tls]");
    println!("  cert_file = \"{}\"", issued.cert.display());
    println!("  key_file = \"{}\"", issued.key.display());
    println!(
        "and make the service trust {} (REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS, ...).",
        issued.ca.display()
    );
    Ok(())
}

fn report(result: anyhow::Result<()>) -> ExitCode {
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

async fn serve(args: &ServeArgs) -> ExitCode {
    let config = match Config::load(&args.config.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    logging::init(config.log.format, &config.log.level);
    wxbroker::fd_limit::raise();
    report(serve_config(&config, args).await)
}

async fn serve_config(config: &Config, args: &ServeArgs) -> anyhow::Result<()> {
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let listeners = Listeners::bind(config).await?;
    let daemon = wxbroker::start(config, listeners).await?;
    let shutdown = shutdown_signal();
    let outcome = if args.exit_after_token {
        exit_after_token(&daemon, args, shutdown).await
    } else {
        serve_until(&daemon, args, shutdown).await;
        Ok(())
    };
    tracing::info!("shutting down");
    daemon.shutdown().await;
    if outcome.is_ok() && args.exit_after_token {
        tracing::info!("every app holds a token; exiting as asked (--exit-after-token)");
    }
    outcome
}

/// Serves until `shutdown`, telling systemd (when it runs us with
/// `Type=notify`) READY=1 once every app's first token attempt is done,
/// and STOPPING=1 when the shutdown begins; reloads on SIGHUP. The file is
/// read on a thread of its own, so a slow or stuck read never delays the
/// shutdown.
async fn serve_until(daemon: &Daemon, args: &ServeArgs, shutdown: impl Future<Output = ()>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut shutdown = std::pin::pin!(shutdown);
    let mut hangups = signal(SignalKind::hangup()).expect("installing a SIGHUP handler");
    let mut reloads = ConfigReloads::new(args.config.config.clone());
    let mut first_attempts = std::pin::pin!(daemon.first_attempts(args.start_timeout));
    let mut ready = false;
    loop {
        tokio::select! {
            not_ready = &mut first_attempts, if !ready => {
                ready = true;
                let status = if not_ready.is_empty() {
                    format!("serving; {} app(s) hold a valid token", daemon.broker.apps().len())
                } else {
                    format!("serving; no valid token for {}", join(&not_ready))
                };
                send_notification(&format!("READY=1\nSTATUS={}", notify::status_line(&status)));
            }
            _ = hangups.recv() => request_reload(&mut reloads, &args.config.config),
            loaded = reloads.finished() => {
                apply_reload(daemon, loaded).await;
                if !reloads.in_flight() {
                    send_notification("READY=1");
                }
            }
            () = shutdown.as_mut() => break,
        }
    }
    send_notification("STOPPING=1\nSTATUS=shutting down");
}

fn request_reload(reloads: &mut ConfigReloads, path: &std::path::Path) {
    match reloads.request() {
        Ok(Requested::Started) => {
            send_notification("RELOADING=1");
            tracing::info!(path = %path.display(), "SIGHUP: reloading the configuration");
        }
        Ok(Requested::Queued { running_for }) => tracing::warn!(
            path = %path.display(),
            running_for_secs = running_for.as_secs(),
            "SIGHUP while the previous reload is still reading the configuration; \
             another read follows it"
        ),
        Err(err) => tracing::error!(error = %err, "reload not started"),
    }
}

/// Applies a configuration read on SIGHUP; one that does not validate
/// changes nothing. Waits for the refreshers it stops (each at most its
/// `fetch_timeout`), so a SIGTERM meanwhile is seen right after.
async fn apply_reload(daemon: &Daemon, loaded: Result<Config, ReloadError>) {
    match loaded {
        Ok(config) => {
            for warning in config.warnings() {
                tracing::warn!("{warning}");
            }
            if let Err(err) = daemon.reload(&config).await {
                tracing::error!(
                    error = %err,
                    "reload rejected: the running configuration stays in effect"
                );
            }
        }
        Err(err) => tracing::error!(
            error = %err,
            "reload rejected: the running configuration stays in effect"
        ),
    }
}

/// `serve --exit-after-token`: wait for every app's first attempt, make
/// sure the sinks hold the tokens, and report.
async fn exit_after_token(
    daemon: &Daemon,
    args: &ServeArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let not_ready = tokio::select! {
        not_ready = daemon.first_attempts(args.start_timeout) => not_ready,
        () = shutdown => anyhow::bail!("interrupted before every app had a token"),
    };
    if !not_ready.is_empty() {
        anyhow::bail!("no token for: {}", join(&not_ready));
    }
    if let Err(failed) = daemon.flush_sinks().await {
        let failed: Vec<String> = failed.iter().map(|err| format!("{err:#}")).collect();
        anyhow::bail!("could not write the token sinks: {}", failed.join("; "));
    }
    Ok(())
}

fn join(items: &[impl std::fmt::Display]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn send_notification(state: &str) {
    match notify::notify(state) {
        Ok(true) => tracing::debug!(state, "notified systemd"),
        Ok(false) => {}
        Err(err) => tracing::warn!(error = %err, "could not notify systemd (NOTIFY_SOCKET)"),
    }
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
    let wecom = simulator.clone();
    let sim_task = tokio::spawn(simulator.serve(sim_listener, async move {
        let _ = sim_stopped.await;
    }));
    let config = demo::config(
        &sim_url,
        args.listen,
        &args.socket,
        args.metrics_listen,
        args.compat_listen,
        args.lifetime,
    )?;
    let listeners = Listeners::bind(&config)
        .await
        .context("binding the demo's listeners (pass --listen/--metrics-listen 127.0.0.1:0 if the ports are taken)")?;
    let listen = listeners.api_tcp_addr().unwrap_or(args.listen);
    let metrics = listeners.metrics_addr().unwrap_or(args.metrics_listen);
    let compat = listeners.compat_addr().unwrap_or(args.compat_listen);
    let callback = listeners
        .callback_addr()
        .context("the demo's callback listener")?;
    println!(
        "{}",
        demo::banner(
            listen,
            &args.socket,
            metrics,
            compat,
            &sim_url,
            args.lifetime
        )
    );
    let showcase = tokio::spawn(async move {
        println!("{}", demo::signed_wx_config(listen).await);
        println!(
            "{}",
            demo::suite_showcase(wecom, listen, compat, callback).await
        );
    });
    wxbroker::run(&config, listeners, shutdown_signal()).await?;
    showcase.abort();
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
    for arg in &args.suites {
        let suite_id = &arg.suite.suite_id;
        simulator.add_suite(arg.suite.clone());
        simulator.set_suite_receive_id(suite_id, arg.receive_id);
        if let Some(url) = &arg.callback {
            simulator.set_suite_callback_url(suite_id, url);
        }
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
    for arg in &args.suites {
        let suite = &arg.suite;
        match &arg.callback {
            Some(url) => println!(
                "  suite {} ({}) pushing a suite_ticket to {url} every {}",
                suite.suite_id,
                if suite.customized {
                    "代开发"
                } else {
                    "third-party app"
                },
                humantime::format_duration(arg.ticket_every)
            ),
            None => println!(
                "  suite {} (no callback: POST /__sim/suites to set one)",
                suite.suite_id
            ),
        }
    }
    println!("  admin: http://{addr}/__sim/calls, http://{addr}/__sim/suites/calls");
    // The listener is bound already, so a suite token can be fetched with
    // the first ticket the moment it is pushed.
    let pushers: Vec<_> = args
        .suites
        .iter()
        .filter(|arg| arg.callback.is_some())
        .map(|arg| simulator.spawn_suite_ticket_pusher(&arg.suite.suite_id, arg.ticket_every))
        .collect();
    simulator.serve(listener, shutdown_signal()).await?;
    pushers.iter().for_each(tokio::task::JoinHandle::abort);
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

async fn probe(args: ProbeArgs) -> anyhow::Result<()> {
    let target = match args.socket {
        Some(path) => Target::Unix(path),
        None => {
            let base = args.url.trim_end_matches('/');
            let rest = base.strip_prefix("http://").unwrap_or(base);
            if rest.contains('/') {
                anyhow::bail!(
                    "--url takes the broker's base URL, such as http://127.0.0.1:9930; \
                     name the endpoint as an argument (readyz or livez)"
                );
            }
            Target::Tcp(base.to_owned())
        }
    };
    let path = args.endpoint.path();
    let reply = client::send(
        &target,
        Method::GET,
        path,
        "wxbroker-probe",
        None,
        args.timeout,
    )
    .await?;
    let body = String::from_utf8_lossy(&reply.body);
    if reply.status == http::StatusCode::OK {
        println!("{path}: {}", body.trim_end());
        return Ok(());
    }
    anyhow::bail!(
        "{path} at {target} answered {}: {}",
        reply.status,
        body.trim_end()
    )
}

/// `wxbroker quota`: WeChat's count, asked through the running broker.
async fn quota(args: QuotaArgs) -> anyhow::Result<()> {
    let path = format!(
        "/v1/apps/{}/quota?cgi_path={}",
        path_segment(&args.app),
        url_encode(&args.cgi_path)
    );
    let answer = ask_broker(&args.broker, Method::GET, &path, None).await?;
    print!("{}", wxbroker::diagnostics::report::quota(&answer));
    Ok(())
}

/// `wxbroker clear-quota --confirm`.
async fn clear_quota(args: ClearQuotaArgs) -> anyhow::Result<()> {
    let path = format!("/v1/apps/{}/clear_quota", path_segment(&args.app));
    let body = bytes::Bytes::from_static(br#"{"confirm":true}"#);
    let answer = ask_broker(&args.broker, Method::POST, &path, Some(body)).await?;
    print!("{}", wxbroker::diagnostics::report::clear_quota(&answer));
    Ok(())
}

/// `wxbroker rid`.
async fn rid(args: RidArgs) -> anyhow::Result<()> {
    let path = format!("/v1/apps/{}/rids/{}", path_segment(&args.app), args.rid);
    let answer = ask_broker(&args.broker, Method::GET, &path, None).await?;
    print!("{}", wxbroker::diagnostics::report::rid(&answer));
    Ok(())
}

/// One request to the broker the way `wxbroker token` finds it; the JSON
/// answer, or the broker's error message (with WeChat's errcode) as the
/// error.
async fn ask_broker(
    broker: &BrokerArgs,
    method: Method,
    path: &str,
    body: Option<bytes::Bytes>,
) -> anyhow::Result<serde_json::Value> {
    let target = match &broker.socket {
        Some(path) => Target::Unix(path.clone()),
        None => Target::Tcp(broker.url.clone()),
    };
    let reply = client::send(&target, method, path, &broker.client, body, broker.timeout).await?;
    let answer = serde_json::from_slice::<serde_json::Value>(&reply.body).ok();
    if reply.status.is_success() {
        return answer.ok_or_else(|| {
            anyhow::anyhow!("the broker at {target} answered a body that is not JSON")
        });
    }
    let error = answer.as_ref().map(|answer| &answer["error"]);
    let message = error
        .and_then(|error| error["message"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&reply.body).into_owned());
    let code = error
        .and_then(|error| error["code"].as_str())
        .unwrap_or("error");
    let wechat = error
        .and_then(|error| Some((error["errcode"].as_i64()?, error["errmsg"].as_str()?)))
        .map_or(String::new(), |(errcode, errmsg)| {
            format!("\nwechat said: errcode {errcode}: {errmsg}")
        });
    anyhow::bail!(
        "the broker at {target} answered {} {code}: {message}{wechat}",
        reply.status.as_u16()
    )
}

/// An app name as a path segment: names are `[a-z0-9_-]`, anything else
/// is percent-encoded so it reaches the broker (and its "no app named"
/// answer) intact.
fn path_segment(name: &str) -> String {
    url_encode(name)
}

fn url_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
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
