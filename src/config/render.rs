//! `check-config` output: the effective settings, defaults filled in, as
//! TOML that parses back to the same configuration (except that an inline
//! secret shows as `***`). Unset optional keys appear as comments so the
//! operator sees what is off.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::{AppKind, Config, Grant, LogFormat, SecretSource, SinkFormat, StoreBackend};

pub(crate) fn effective(config: &Config) -> String {
    let mut out = Out::default();
    out.comment(&format!(
        "effective configuration of {}; secrets are masked",
        config.source
    ));

    let server = &config.server;
    out.table("[server]");
    out.addr("listen", server.listen);
    out.path("unix_socket", server.unix_socket.as_deref());
    // Both are refused without a socket, so they are only shown with one.
    if server.unix_socket.is_some() {
        out.string("socket_mode", &format!("{:04o}", server.socket_mode));
        out.opt_string("socket_group", server.socket_group.as_deref());
    }
    out.raw(
        "require_client_header",
        &server.require_client_header.to_string(),
    );
    out.raw("max_connections", &server.max_connections.to_string());
    out.addr("metrics_listen", server.metrics_listen);
    out.addr("wechat_compat_listen", server.wechat_compat_listen);
    out.duration("token_wait_timeout", server.token_wait_timeout);
    out.duration("idle_timeout", server.idle_timeout);
    out.duration("body_timeout", server.body_timeout);
    out.duration("write_timeout", server.write_timeout);

    out.table("[store]");
    match &config.store.backend {
        StoreBackend::Memory => out.string("backend", "memory"),
        StoreBackend::File { path } => {
            out.string("backend", "file");
            out.path("path", Some(path));
        }
        StoreBackend::Redis { url } => {
            out.string("backend", "redis");
            out.string("url", &mask_url(url));
        }
    }
    out.string("key_prefix", &config.store.key_prefix);

    out.table("[log]");
    let format = match config.log.format {
        LogFormat::Pretty => "pretty",
        LogFormat::Json => "json",
    };
    out.string("format", format);
    out.string("level", &config.log.level);

    for app in &config.apps {
        out.table("[[apps]]");
        out.string("name", &app.name);
        match app.kind {
            AppKind::Wechat => {
                out.string("kind", "wechat");
                let grant = match app.grant {
                    Grant::Classic => "classic",
                    Grant::Stable => "stable",
                };
                out.string("grant", grant);
            }
            AppKind::Wecom => out.string("kind", "wecom"),
        }
        out.string("appid", &app.appid);
        match &app.secret_source {
            SecretSource::Env(name) => out.string("secret_env", name),
            SecretSource::File(path) => out.path("secret_file", Some(path)),
            SecretSource::Inline => out.string("secret", "***"),
        }
        out.duration("refresh_before", app.refresh_before);
        out.raw("daily_budget", &app.daily_budget.to_string());
        out.duration("min_forced_interval", app.min_forced_interval);
        out.string("api_base", &app.api_base);
        out.duration("fetch_timeout", app.fetch_timeout);
        match &app.sink {
            Some(sink) => {
                let format = match sink.format {
                    SinkFormat::Json => "json",
                    SinkFormat::Raw => "raw",
                };
                out.raw(
                    "sink",
                    &format!(
                        "{{ path = {}, format = {}, mode = {} }}",
                        quoted(&sink.path.to_string_lossy()),
                        quoted(format),
                        quoted(&format!("{:04o}", sink.mode))
                    ),
                );
            }
            None => out.comment("sink: not set (disabled)"),
        }
    }
    out.0
}

fn quoted(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

/// Builds the text line by line, quoting values the TOML way.
#[derive(Default)]
struct Out(String);

impl Out {
    fn comment(&mut self, text: &str) {
        let _ = writeln!(self.0, "# {text}");
    }

    fn table(&mut self, header: &str) {
        let _ = writeln!(self.0, "\n{header}");
    }

    fn raw(&mut self, key: &str, value: &str) {
        let _ = writeln!(self.0, "{key} = {value}");
    }

    fn string(&mut self, key: &str, value: &str) {
        self.raw(key, &quoted(value));
    }

    fn opt_string(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(value) => self.string(key, value),
            None => self.comment(&format!("{key}: not set")),
        }
    }

    fn addr(&mut self, key: &str, value: Option<SocketAddr>) {
        match value {
            Some(addr) => self.string(key, &addr.to_string()),
            None => self.comment(&format!("{key}: not set (disabled)")),
        }
    }

    fn path(&mut self, key: &str, value: Option<&Path>) {
        match value {
            Some(path) => self.string(key, &path.to_string_lossy()),
            None => self.comment(&format!("{key}: not set (disabled)")),
        }
    }

    fn duration(&mut self, key: &str, value: Duration) {
        self.string(key, &humantime::format_duration(value).to_string());
    }
}

/// Masks the password of a Redis URL: the one in the userinfo
/// (`redis://user:***@host`) and a `pass`/`password` query parameter
/// (`redis+unix:///sock?pass=***`).
pub(crate) fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Validation guarantees a scheme; mask everything if not.
        return "***".to_owned();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    // The last '@' ends the userinfo even if an unencoded '@' or '/' sits in
    // the password; Redis paths (`/0`) never contain one.
    let location = match before_query.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => before_query.to_owned(),
    };
    let mut masked = format!("{scheme}://{location}");
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if name == "pass" || name == "password" => format!("{name}=***"),
                _ => param.to_owned(),
            })
            .collect();
        masked.push('?');
        masked.push_str(&params.join("&"));
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::mask_url;

    #[test]
    fn redis_passwords_are_masked() {
        for (url, masked) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
            ("rediss://user:pw@h/1", "rediss://user:***@h/1"),
            ("redis://user@h", "redis://user@h"),
            ("redis://:p@ss/w@h/0", "redis://:***@h/0"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=pw",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
            ("nonsense", "***"),
        ] {
            assert_eq!(mask_url(url), masked, "{url}");
        }
    }
}
