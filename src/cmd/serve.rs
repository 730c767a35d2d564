//! `wxbroker serve`: loads the configuration, runs the daemon until
//! SIGTERM or SIGINT, reloads on SIGHUP and keeps systemd told; with
//! `--exit-after-token`, exits once every app holds a token.

use std::future::Future;
use std::process::ExitCode;

use wxbroker::cli::ServeArgs;
use wxbroker::config::Config;
use wxbroker::errors::Chain;
use wxbroker::reload::{ConfigReloads, ReloadError, Requested};
use wxbroker::{logging, notify, Daemon, Listeners};

use super::{report, shutdown_signal, CONFIG_ERROR};

pub async fn run(args: &ServeArgs) -> ExitCode {
    let config = match Config::load(&args.config.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {}", Chain(&err));
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
        Err(err) => tracing::error!(error = %Chain(&err), "reload not started"),
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
                    error = %Chain(&err),
                    "reload rejected: the running configuration stays in effect"
                );
            }
        }
        Err(err) => tracing::error!(
            error = %Chain(&err),
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
        let failed: Vec<String> = failed.iter().map(|err| Chain(err).to_string()).collect();
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
        Err(err) => {
            tracing::warn!(error = %Chain(&err), "could not notify systemd (NOTIFY_SOCKET)")
        }
    }
}
