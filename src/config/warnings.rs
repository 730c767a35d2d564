//! Settings that are allowed but deserve an operator's second look. Each
//! warning reads like an error (`{source}: {key}: {message}`) and says
//! what to do instead.

use std::path::Path;
use std::time::Duration;

use humantime::format_duration;

use super::fields::{is_loopback, TOKEN_LIFETIME};
use super::urls::is_local_host;
use super::{Config, SecretSource, StoreBackend};

pub(crate) fn collect(config: &Config) -> Vec<String> {
    let mut found = Vec::new();
    let mut warn = |key: &str, message: String| {
        found.push(format!("{}: {key}: {message}", config.source));
    };

    let server = &config.server;
    // Validation already refused a non-loopback `listen` without the header.
    if let Some(addr) = server.listen.filter(|a| !is_loopback(a)) {
        warn(
            "server.listen",
            format!(
                "{addr} is not a loopback address: any host that reaches it can read tokens, \
                 with only the Wxbroker-Client header in the way; prefer 127.0.0.1 or the \
                 Unix socket"
            ),
        );
    }
    if let Some(addr) = server.metrics_listen.filter(|a| !is_loopback(a)) {
        warn(
            "server.metrics_listen",
            format!("{addr} is not a loopback address: app status and metrics are exposed to it"),
        );
    }
    if let Some(addr) = server.wechat_compat_listen.filter(|a| !is_loopback(a)) {
        warn(
            "server.wechat_compat_listen",
            format!(
                "{addr} is not a loopback address, and this listener serves tokens with no \
                 client header; bind it to 127.0.0.1"
            ),
        );
    }
    if server.unix_socket.is_some() && server.socket_mode & 0o002 != 0 {
        warn(
            "server.socket_mode",
            format!(
                "{:04o} lets every local user connect to the socket and read tokens; \
                 prefer \"0660\" with socket_group",
                server.socket_mode
            ),
        );
    }

    if let StoreBackend::Redis(redis) = &config.store.backend {
        if let Some((_, SecretSource::File(path))) = &redis.password {
            if let Some(mode) = world_readable(path) {
                warn(
                    "store.password_file",
                    format!(
                        "{} is readable by every local user (mode {mode:04o}); chmod o-r it",
                        path.display()
                    ),
                );
            }
        }
    }
    if let Some(message) = super::clients::unidentified_listeners(config) {
        warn("clients", message);
    }
    super::suites::warnings(&config.suites, &mut warn);

    let mut inline = Vec::new();
    for app in &config.apps {
        let key = |field: &str| format!("apps.{}.{field}", app.name);
        match &app.secret_source {
            SecretSource::Inline => {
                inline.push(key("secret"));
                warn(
                    &key("secret"),
                    "the secret is written in the configuration file; prefer secret_env or \
                     secret_file"
                        .to_owned(),
                );
            }
            SecretSource::File(path) => {
                if let Some(mode) = world_readable(path) {
                    warn(
                        &key("secret_file"),
                        format!(
                            "{} is readable by every local user (mode {mode:04o}); \
                             chmod o-r it",
                            path.display()
                        ),
                    );
                }
            }
            SecretSource::Env(_) | SecretSource::Leader => {}
        }
        if app.api_base.starts_with("http://") && !is_local_host(&app.api_base) {
            warn(
                &key("api_base"),
                "plain http to a non-local host sends the app secret unencrypted; use https"
                    .to_owned(),
            );
        }
        // Proactive refreshes alone, one per (lifetime - refresh_before).
        let period = TOKEN_LIFETIME.saturating_sub(app.refresh_before);
        let per_day = Duration::from_secs(86_400).as_secs_f64() / period.as_secs_f64().max(1.0);
        if per_day > f64::from(app.daily_budget) {
            warn(
                &key("refresh_before"),
                format!(
                    "refreshing every {} takes about {} fetches a day, more than daily_budget \
                     ({}); lower refresh_before or raise the budget",
                    format_duration(period),
                    per_day.ceil(),
                    app.daily_budget
                ),
            );
        }
        if let Some(sink) = app.sink.as_ref().filter(|s| s.mode & 0o006 != 0) {
            warn(
                &key("sink.mode"),
                format!(
                    "{:04o} lets every local user read (or replace) the token in {}; \
                     prefer \"0640\" and a shared group",
                    sink.mode,
                    sink.path.display()
                ),
            );
        }
        if app.min_forced_interval.is_zero() {
            warn(
                &key("min_forced_interval"),
                "0 lets every invalidation of the current token force a refresh; a looping \
                 client can spend the daily budget"
                    .to_owned(),
            );
        }
    }

    // `source` is the file path when loaded with `Config::load`; when it
    // merely names text given in memory, there is no file to check.
    if !inline.is_empty() {
        if let Some(mode) = world_readable(Path::new(&config.source)) {
            found.push(format!(
                "{}: the file holds inline secrets ({}) and is readable by every local user \
                 (mode {mode:04o}); chmod o-r it",
                config.source,
                inline.join(", ")
            ));
        }
    }
    found
}

/// The permission bits of `path` if others may read it; `None` when not,
/// or when it cannot be checked.
#[cfg(unix)]
fn world_readable(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o004 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn world_readable(_path: &Path) -> Option<u32> {
    None
}
