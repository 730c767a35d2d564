//! `[[apps]]`: each app's kind, grant, appid, secret, timings, sink,
//! listener, tickets and leader, and the rules between apps (one name,
//! one token per appid and grant, one sink per file).

use std::time::Duration;

use humantime::format_duration;

use crate::config::error::Problem;
use crate::config::fields::{
    api_base, at_most, choice, duration, octal_mode, path, positive, socket_addr, table_name, Env,
    TOKEN_LIFETIME, WECHAT_API_BASE, WECOM_API_BASE,
};
use crate::config::raw::{InlineSecret, RawApp, RawSink};
use crate::config::secrets::secret_of;
use crate::config::{follow, tickets};
use crate::config::{AppConfig, AppKind, Grant, SecretSource, SinkConfig, SinkFormat};
use crate::secret::Secret;

/// A token file is as sensitive as the token: owner only unless widened.
const DEFAULT_SINK_MODE: u32 = 0o600;
const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(300);
const DEFAULT_DAILY_BUDGET: u32 = 1000;
const DEFAULT_MIN_FORCED_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A token call that takes longer than this is not going to succeed; the
/// retry with backoff does better.
const MAX_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Every app, in configuration order.
pub(super) fn apps(raw: Vec<RawApp>, env: Env<'_>) -> Result<Vec<AppConfig>, Problem> {
    if raw.is_empty() {
        return Err(Problem::new(
            "apps",
            "no apps configured; add at least one [[apps]] table",
        ));
    }
    let mut apps: Vec<AppConfig> = Vec::with_capacity(raw.len());
    for (index, mut raw) in raw.into_iter().enumerate() {
        let name = table_name("apps", index, raw.name.take())?;
        if let Some(earlier) = apps.iter().position(|a| a.name == name) {
            return Err(Problem::new(
                format!("apps[{index}].name"),
                format!("\"{name}\" is already the name of apps[{earlier}]"),
            ));
        }
        let app = app(name, raw, env)?;
        // Two classic-grant apps with one appid would invalidate each other's
        // tokens: the very bug this daemon exists to prevent. (WeCom apps
        // share a corpid legitimately, each with its own secret.)
        if app.kind == AppKind::Wechat {
            if let Some(twin) = apps
                .iter()
                .find(|a| a.kind == AppKind::Wechat && a.appid == app.appid && a.grant == app.grant)
            {
                return Err(Problem::new(
                    format!("apps.{}.appid", app.name),
                    format!(
                        "app \"{}\" already uses this appid with the same grant; \
                         the two would fetch competing tokens",
                        twin.name
                    ),
                ));
            }
        }
        if let Some(sink) = &app.sink {
            // Two apps writing one file would each overwrite the other's token.
            if let Some(twin) = apps
                .iter()
                .find(|a| a.sink.as_ref().is_some_and(|s| s.path == sink.path))
            {
                return Err(Problem::new(
                    format!("apps.{}.sink.path", app.name),
                    format!(
                        "\"{}\" is already the sink of app \"{}\"",
                        sink.path.display(),
                        twin.name
                    ),
                ));
            }
        }
        apps.push(app);
    }
    Ok(apps)
}

fn app(name: String, raw: RawApp, env: Env<'_>) -> Result<AppConfig, Problem> {
    let key = |field: &str| format!("apps.{name}.{field}");

    let kind = choice(
        &key("kind"),
        raw.kind.as_deref(),
        AppKind::Wechat,
        &[("wechat", AppKind::Wechat), ("wecom", AppKind::Wecom)],
    )?;
    let grant = match kind {
        AppKind::Wechat => choice(
            &key("grant"),
            raw.grant.as_deref(),
            Grant::Classic,
            &[("classic", Grant::Classic), ("stable", Grant::Stable)],
        )?,
        // WeCom has one token endpoint, which behaves like the classic one.
        AppKind::Wecom if raw.grant.is_some() => {
            return Err(Problem::new(
                key("grant"),
                "grant applies to wechat apps only",
            ));
        }
        AppKind::Wecom => Grant::Classic,
    };

    let appid = raw
        .appid
        .ok_or_else(|| Problem::new(key("appid"), "required"))?;
    if appid.is_empty() || !appid.bytes().all(|b| b.is_ascii_graphic()) {
        // Goes into URLs, store keys and logs; WeChat appids and WeCom
        // corpids are plain ASCII, so anything else is a paste error.
        return Err(Problem::new(
            key("appid"),
            "must be non-empty printable ASCII without spaces",
        ));
    }

    let secret_keys: Vec<&str> = [
        ("secret_env", raw.secret_env.is_some()),
        ("secret_file", raw.secret_file.is_some()),
        ("secret", raw.secret.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect();
    let follow = follow::follow(
        &key,
        follow::RawFollow {
            url: raw.follow,
            credential_file: raw.follow_credential_file,
            ca_file: raw.follow_ca_file,
        },
        &secret_keys,
    )?;
    let (secret, secret_source) = match follow {
        Some(_) => (Secret::new(""), SecretSource::Leader),
        None => secret(&name, raw.secret_env, raw.secret_file, raw.secret, env)?,
    };

    let refresh_before = duration(
        &key("refresh_before"),
        raw.refresh_before.as_ref(),
        DEFAULT_REFRESH_BEFORE,
    )?;
    positive(&key("refresh_before"), refresh_before)?;
    if refresh_before >= TOKEN_LIFETIME {
        return Err(Problem::new(
            key("refresh_before"),
            format!(
                "must be shorter than the token lifetime ({})",
                format_duration(TOKEN_LIFETIME)
            ),
        ));
    }

    let daily_budget = match raw.daily_budget {
        None => DEFAULT_DAILY_BUDGET,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| Problem::new(key("daily_budget"), "must be at least 1"))?,
    };

    let min_forced_interval = duration(
        &key("min_forced_interval"),
        raw.min_forced_interval.as_ref(),
        DEFAULT_MIN_FORCED_INTERVAL,
    )?;

    let default_base = match kind {
        AppKind::Wechat => WECHAT_API_BASE,
        AppKind::Wecom => WECOM_API_BASE,
    };
    let api_base = api_base(&key("api_base"), raw.api_base, default_base)?;

    let fetch_timeout = duration(
        &key("fetch_timeout"),
        raw.fetch_timeout.as_ref(),
        DEFAULT_FETCH_TIMEOUT,
    )?;
    positive(&key("fetch_timeout"), fetch_timeout)?;
    at_most(&key("fetch_timeout"), fetch_timeout, MAX_FETCH_TIMEOUT)?;

    let sink = raw.sink.map(|raw| sink(&key("sink"), raw)).transpose()?;
    let compat_listen = socket_addr(&key("compat_listen"), raw.compat_listen)?;
    let (tickets, agentid) =
        tickets::tickets(&key, kind, raw.tickets, raw.agentid, raw.ticket_budget)?;

    Ok(AppConfig {
        name,
        kind,
        grant,
        appid,
        secret,
        secret_source,
        refresh_before,
        daily_budget,
        min_forced_interval,
        api_base,
        fetch_timeout,
        sink,
        compat_listen,
        tickets,
        agentid,
        follow,
    })
}

/// `sink = { path, format, mode }`; `key` is `apps.{name}.sink`.
fn sink(key: &str, raw: RawSink) -> Result<SinkConfig, Problem> {
    let path_key = format!("{key}.path");
    let path = path(&path_key, raw.path)?
        .ok_or_else(|| Problem::new(&path_key, "required (the file to write the token to)"))?;
    // The daemon's working directory is wherever it was started (`/` under
    // systemd), so a relative path would land somewhere unexpected.
    if !path.is_absolute() {
        return Err(Problem::new(
            path_key,
            format!("\"{}\" must be an absolute path", path.display()),
        ));
    }
    if path.file_name().is_none() || path.as_os_str().to_string_lossy().ends_with('/') {
        return Err(Problem::new(
            path_key,
            format!("\"{}\" must name a file, not a directory", path.display()),
        ));
    }
    let format = choice(
        &format!("{key}.format"),
        raw.format.as_deref(),
        SinkFormat::Json,
        &[("json", SinkFormat::Json), ("raw", SinkFormat::Raw)],
    )?;
    let mode = octal_mode(&format!("{key}.mode"), raw.mode.as_ref(), DEFAULT_SINK_MODE)?;
    if mode & 0o600 != 0o600 {
        // The broker replaces the file as its owner; a mode without owner
        // read and write is a typo (e.g. "0060"), not a policy.
        return Err(Problem::new(
            format!("{key}.mode"),
            format!("\"{mode:04o}\" must give the owner read and write (0600 or wider)"),
        ));
    }
    Ok(SinkConfig { path, format, mode })
}

/// Exactly one of `secret_env`, `secret_file`, `secret`.
fn secret(
    app: &str,
    env_name: Option<String>,
    file: Option<String>,
    inline: Option<InlineSecret>,
    env: Env<'_>,
) -> Result<(Secret, SecretSource), Problem> {
    secret_of(
        &format!("apps.{app}"),
        "secret",
        env_name,
        file,
        inline,
        env,
    )
}
