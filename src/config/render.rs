//! `check-config` output: the effective settings, defaults filled in, as
//! TOML that parses back to the same configuration (except that an inline
//! secret and the password of a URL show as `***`). Unset optional keys
//! appear as comments so the operator sees what is off.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::urls::masked;
use super::{
    AppKind, ClientIdentity, Config, Grant, LogFormat, Resolve, SecretSource, SinkFormat,
    StoreBackend,
};

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
    if let Some(threads) = server.request_threads {
        out.raw("request_threads", &threads.to_string());
    }
    out.addr("metrics_listen", server.metrics_listen);
    out.addr("wechat_compat_listen", server.wechat_compat_listen);
    out.duration("token_wait_timeout", server.token_wait_timeout);
    out.duration("idle_timeout", server.idle_timeout);
    if let Some(tls) = &server.compat_tls {
        out.raw(
            "compat_tls",
            &format!(
                "{{ cert_file = {}, key_file = {} }}",
                quoted(&tls.cert_file.to_string_lossy()),
                quoted(&tls.key_file.to_string_lossy())
            ),
        );
    }
    out.duration("body_timeout", server.body_timeout);
    out.duration("write_timeout", server.write_timeout);
    out.addr("remote_listen", server.remote_listen);
    if let Some(tls) = &server.remote_tls {
        out.raw(
            "remote_tls",
            &format!(
                "{{ cert_file = {}, key_file = {} }}",
                quoted(&tls.cert_file.to_string_lossy()),
                quoted(&tls.key_file.to_string_lossy())
            ),
        );
    }
    if server.remote_listen.is_some() {
        out.raw(
            "remote_max_connections",
            &server.remote_max_connections.to_string(),
        );
        out.raw(
            "remote_max_watches_per_client",
            &server.remote_max_watches_per_client.to_string(),
        );
    }
    out.addr("callback_listen", server.callback_listen);

    out.table("[store]");
    match &config.store.backend {
        StoreBackend::Memory => out.string("backend", "memory"),
        StoreBackend::File { path } => {
            out.string("backend", "file");
            out.path("path", Some(path));
        }
        StoreBackend::Redis(redis) => {
            out.string("backend", "redis");
            out.string("url", &masked(&redis.url));
            // Where the password comes from, never the password.
            match &redis.password {
                Some((_, SecretSource::Env(name))) => out.string("password_env", name),
                Some((_, SecretSource::File(path))) => out.path("password_file", Some(path)),
                // Leader: only an app's secret can be its leader's.
                Some((_, SecretSource::Inline | SecretSource::Leader)) | None => {
                    out.opt_string("password_env", None)
                }
            }
            out.path("ca_file", redis.ca_file.as_deref());
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
    out.path("audit_file", config.log.audit_file.as_deref());
    if config.log.audit_file.is_some() {
        out.raw("audit_max_bytes", &config.log.audit_max_bytes.to_string());
    }

    out.table("[upstream]");
    let resolve = match config.upstream.resolve {
        Resolve::System => "system",
        Resolve::Dns => "dns",
    };
    out.string("resolve", resolve);
    if !config.upstream.connect_to.is_empty() {
        let pairs: Vec<String> = config
            .upstream
            .connect_to
            .iter()
            .map(|(host, addr)| format!("{} = {}", quoted(host), quoted(&addr.to_string())))
            .collect();
        out.raw("connect_to", &format!("{{ {} }}", pairs.join(", ")));
    }

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
            SecretSource::Leader => {}
        }
        if let Some(follow) = &app.follow {
            out.string("follow", &masked(&follow.url));
            out.path("follow_credential_file", Some(&follow.credential_file));
            out.path("follow_ca_file", follow.ca_file.as_deref());
        }
        out.duration("refresh_before", app.refresh_before);
        out.raw("daily_budget", &app.daily_budget.to_string());
        out.duration("min_forced_interval", app.min_forced_interval);
        // Validation refuses userinfo in api_base; masked all the same, since
        // an AppConfig can be built in code.
        out.string("api_base", &masked(&app.api_base));
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
        out.addr("compat_listen", app.compat_listen);
        if app.tickets.is_empty() {
            out.comment("tickets: none");
        } else {
            let kinds: Vec<String> = app.tickets.iter().map(|t| quoted(t.kind.name())).collect();
            out.raw("tickets", &format!("[{}]", kinds.join(", ")));
            let budgets: Vec<String> = app
                .tickets
                .iter()
                .map(|t| format!("{} = {}", t.kind.name(), t.daily_budget))
                .collect();
            out.raw("ticket_budget", &format!("{{ {} }}", budgets.join(", ")));
        }
        if let Some(agentid) = app.agentid {
            out.raw("agentid", &agentid.to_string());
        }
    }
    for client in &config.clients {
        out.table("[[clients]]");
        if client.identity.default_name().as_ref() == Some(&client.name) {
            out.comment(&format!("name: {} (from its identity)", client.name));
        } else {
            out.string("name", &client.name);
        }
        match client.identity {
            // The digest is shown masked like a secret: check-config
            // output is pasted into tickets and chats.
            ClientIdentity::Bearer { .. } => out.string("credential_sha256", "***"),
            ClientIdentity::Uid(uid) => out.raw("uid", &uid.to_string()),
            ClientIdentity::Gid(gid) => out.raw("gid", &gid.to_string()),
        }
        out.raw("apps", &quoted_list(client.apps.iter().map(String::as_str)));
        if !client.platforms.is_empty() {
            out.raw(
                "platforms",
                &quoted_list(client.platforms.iter().map(String::as_str)),
            );
        }
        if !client.suites.is_empty() {
            out.raw(
                "suites",
                &quoted_list(client.suites.iter().map(String::as_str)),
            );
        }
        match &client.apis {
            Some(apis) => out.raw("apis", &quoted_list(apis.iter().map(|api| api.as_str()))),
            None => out.comment("apis: not set (every path)"),
        }
        if client.admin {
            out.raw("admin", "true");
        }
    }
    for platform in &config.platforms {
        out.table("[[platforms]]");
        out.string("name", &platform.name);
        out.string("component_appid", &platform.component_appid);
        out.pushed_secret("secret", &platform.secret_source);
        out.pushed_secret("token", &platform.token_source);
        out.pushed_secret("aes_key", &platform.aes_key_source);
        out.duration("refresh_before", platform.refresh_before);
        out.raw("daily_budget", &platform.daily_budget.to_string());
        out.duration("min_forced_interval", platform.min_forced_interval);
        out.raw(
            "authorizer_daily_budget",
            &platform.authorizer_daily_budget.to_string(),
        );
        out.string("api_base", &masked(&platform.api_base));
        out.duration("fetch_timeout", platform.fetch_timeout);
    }
    for suite in &config.suites {
        out.table("[[suites]]");
        out.string("name", &suite.name);
        out.string("suite_id", &suite.suite_id);
        out.string("provider_corpid", &suite.provider_corpid);
        out.pushed_secret("secret", &suite.secret_source);
        out.pushed_secret("token", &suite.token_source);
        out.pushed_secret("aes_key", &suite.aes_key_source);
        match &suite.provider_secret {
            Some((_, from)) => out.pushed_secret("provider_secret", from),
            None => out.comment("provider_secret: not set (no provider_access_token)"),
        }
        out.raw("customized", &suite.customized.to_string());
        out.raw(
            "corp_tickets",
            &quoted_list(suite.corp_tickets.iter().map(|kind| kind.name())),
        );
        out.duration("refresh_before", suite.refresh_before);
        out.raw("daily_budget", &suite.daily_budget.to_string());
        out.string("api_base", &masked(&suite.api_base));
        out.duration("fetch_timeout", suite.fetch_timeout);
    }
    out.0
}

fn quoted(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

/// `["a", "b"]`, each quoted the TOML way.
fn quoted_list<'a>(values: impl Iterator<Item = &'a str>) -> String {
    format!("[{}]", values.map(quoted).collect::<Vec<_>>().join(", "))
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

    /// Where a platform's or suite's secret comes from (`key_env`,
    /// `key_file`, or masked).
    fn pushed_secret(&mut self, key: &str, source: &SecretSource) {
        match source {
            SecretSource::Env(name) => self.string(&format!("{key}_env"), name),
            SecretSource::File(path) => self.path(&format!("{key}_file"), Some(path)),
            SecretSource::Inline | SecretSource::Leader => self.string(key, "***"),
        }
    }

    fn duration(&mut self, key: &str, value: Duration) {
        self.string(key, &humantime::format_duration(value).to_string());
    }
}
