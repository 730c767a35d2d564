//! Configuration loading as an operator meets it: a file goes in, either a
//! `Config` with the right values or an error naming the key comes out, and
//! a secret shows up nowhere.
//!
//! Every test injects its environment (`from_toml_str_with_env`) instead of
//! setting process variables: tests run in parallel threads.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "config/sink.rs"]
mod sink;

use wxbroker::config::{
    AppKind, Config, ConfigError, Grant, LogFormat, SecretSource, StoreBackend,
};

const SOURCE: &str = "wxbroker.toml";
const SHOP_SECRET: &str = "0123456789abcdef0123456789abcdef";
const CRM_SECRET: &str = "CrmSecret-Value_1234567890abcdefghijklmnopq";

const SERVER: &str = "listen = \"127.0.0.1:8930\"";
const APP: &str = "name = \"shop\"\nappid = \"wx1234567890abcdef\"\nsecret_env = \"SHOP_SECRET\"";

fn env(name: &str) -> Option<String> {
    let vars: HashMap<&str, &str> = [
        ("SHOP_SECRET", SHOP_SECRET),
        ("CRM_SECRET", CRM_SECRET),
        ("EMPTY_SECRET", ""),
        ("NEWLINE_SECRET", "from-env-with-newline\n"),
    ]
    .into_iter()
    .collect();
    vars.get(name).map(|v| v.to_string())
}

/// A document with the given `[server]` body and one `[[apps]]` body, plus
/// any further tables.
fn doc(server: &str, app: &str, rest: &str) -> String {
    format!("[server]\n{server}\n\n[[apps]]\n{app}\n\n{rest}\n")
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str_with_env(SOURCE, text, &env)
}

fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("expected a valid config, got: {e}\n---\n{text}"))
}

fn err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(config) => panic!("expected an error, got {config:?}\n---\n{text}"),
        Err(e) => e,
    }
}

fn app_with(extra: &str) -> String {
    doc(SERVER, &format!("{APP}\n{extra}"), "")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

// ----- values -----

#[test]
fn the_full_example_parses_with_every_value() {
    let text = fs::read_to_string(fixture("full.toml")).unwrap();
    let config = ok(&text);
    assert_eq!(config.source, SOURCE);

    let s = &config.server;
    assert_eq!(s.listen, Some("127.0.0.1:8930".parse().unwrap()));
    assert_eq!(
        s.unix_socket.as_deref(),
        Some(Path::new("/run/wxbroker/wxbroker.sock"))
    );
    assert_eq!(s.socket_mode, 0o640);
    assert_eq!(s.socket_group.as_deref(), Some("wxclients"));
    assert!(s.require_client_header);
    assert_eq!(s.max_connections, 2048);
    assert_eq!(s.request_threads, Some(3));
    assert_eq!(s.metrics_listen, Some("127.0.0.1:9930".parse().unwrap()));
    assert_eq!(
        s.wechat_compat_listen,
        Some("127.0.0.1:8931".parse().unwrap())
    );
    assert_eq!(s.token_wait_timeout, Duration::from_secs(5));
    assert_eq!(s.body_timeout, Duration::from_secs(120));
    assert_eq!(s.write_timeout, Duration::from_secs(10));

    assert_eq!(
        config.store.backend,
        StoreBackend::File {
            path: "/var/lib/wxbroker".into()
        }
    );
    assert_eq!(config.store.key_prefix, "prod-wx");
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.log.level, "info,wxbroker=debug");
    assert_eq!(
        config.log.audit_file.as_deref(),
        Some(Path::new("/var/log/wxbroker/audit.jsonl"))
    );
    assert_eq!(config.log.audit_max_bytes, 16 * 1024 * 1024);

    assert_eq!(config.apps.len(), 2);
    let shop = config.app("shop").unwrap();
    assert_eq!(shop.kind, AppKind::Wechat);
    assert_eq!(shop.grant, Grant::Stable);
    assert_eq!(shop.appid, "wx1234567890abcdef");
    assert_eq!(shop.secret.expose(), SHOP_SECRET);
    assert_eq!(shop.secret_source, SecretSource::Env("SHOP_SECRET".into()));
    assert_eq!(shop.refresh_before, Duration::from_secs(600));
    assert_eq!(shop.daily_budget, 500);
    assert_eq!(shop.min_forced_interval, Duration::from_secs(60));
    assert_eq!(
        shop.api_base, "http://127.0.0.1:9000",
        "trailing slash dropped"
    );
    assert_eq!(shop.fetch_timeout, Duration::from_secs(3));

    let crm = config.app("crm").unwrap();
    assert_eq!(crm.kind, AppKind::Wecom);
    assert_eq!(crm.grant, Grant::Classic);
    assert_eq!(crm.secret.expose(), CRM_SECRET);
    assert_eq!(crm.refresh_before, Duration::from_secs(5400));
    assert_eq!(crm.api_base, "https://qyapi.weixin.qq.com");
    assert!(config.app("nope").is_none());
}

#[test]
fn defaults_fill_every_omitted_key() {
    let config = ok(&doc("unix_socket = \"/tmp/wx.sock\"", APP, ""));
    let s = &config.server;
    assert_eq!(s.listen, None);
    assert_eq!(s.unix_socket.as_deref(), Some(Path::new("/tmp/wx.sock")));
    assert_eq!(s.socket_mode, 0o660);
    assert_eq!(s.socket_group, None);
    assert!(s.require_client_header);
    assert_eq!(s.max_connections, 1024);
    assert_eq!(s.request_threads, None, "one per two cores");
    assert_eq!(s.metrics_listen, None);
    assert_eq!(s.wechat_compat_listen, None);
    assert_eq!(s.token_wait_timeout, Duration::from_secs(10));
    assert_eq!(s.body_timeout, Duration::from_secs(60));
    assert_eq!(s.write_timeout, Duration::from_secs(30));

    assert_eq!(config.store.backend, StoreBackend::Memory);
    assert_eq!(config.store.key_prefix, "wxbroker");
    assert_eq!(config.log.format, LogFormat::Pretty);
    assert_eq!(config.log.level, "info");

    let app = &config.apps[0];
    assert_eq!(app.kind, AppKind::Wechat);
    assert_eq!(app.grant, Grant::Classic);
    assert_eq!(app.refresh_before, Duration::from_secs(300));
    assert_eq!(app.daily_budget, 1000);
    assert_eq!(app.min_forced_interval, Duration::from_secs(30));
    assert_eq!(app.api_base, "https://api.weixin.qq.com");
    assert_eq!(app.fetch_timeout, Duration::from_secs(10));
}

#[test]
fn a_wecom_app_defaults_to_the_wecom_api() {
    let config = ok(&app_with("kind = \"wecom\""));
    assert_eq!(config.apps[0].api_base, "https://qyapi.weixin.qq.com");
    assert_eq!(config.apps[0].grant, Grant::Classic);
}

#[test]
fn redis_store_and_its_url_schemes() {
    for url in [
        "redis://127.0.0.1:6379/0",
        "rediss://h:6380",
        "redis+unix:///run/r.sock",
    ] {
        let config = ok(&doc(
            SERVER,
            APP,
            &format!("[store]\nbackend = \"redis\"\nurl = \"{url}\""),
        ));
        let StoreBackend::Redis(redis) = &config.store.backend else {
            panic!("a redis store");
        };
        assert_eq!(redis.url, url);
    }
}

#[test]
fn socket_mode_is_an_octal_string() {
    let with_mode = |mode: &str| {
        doc(
            &format!("unix_socket = \"/tmp/s\"\nsocket_mode = {mode}"),
            APP,
            "",
        )
    };
    assert_eq!(ok(&with_mode("\"0600\"")).server.socket_mode, 0o600);
    assert_eq!(ok(&with_mode("\"660\"")).server.socket_mode, 0o660);
    assert_eq!(ok(&with_mode("\"0o666\"")).server.socket_mode, 0o666);
    for bad in ["\"0680\"", "\"rw-rw----\"", "\"4755\"", "660", "0o660"] {
        let e = err(&with_mode(bad));
        assert_eq!(e.key(), Some("server.socket_mode"), "{bad}: {e}");
    }
}

#[test]
fn durations_are_human_strings() {
    for (text, secs) in [
        ("\"300s\"", 300),
        ("\"5m\"", 300),
        ("\"1h\"", 3600),
        ("\"1h 30m\"", 5400),
    ] {
        let config = ok(&app_with(&format!("refresh_before = {text}")));
        assert_eq!(
            config.apps[0].refresh_before,
            Duration::from_secs(secs),
            "{text}"
        );
    }
    let config = ok(&app_with(
        "min_forced_interval = \"0s\"\nfetch_timeout = \"1500ms\"",
    ));
    assert_eq!(config.apps[0].min_forced_interval, Duration::ZERO);
    assert_eq!(config.apps[0].fetch_timeout, Duration::from_millis(1500));
    let config = ok(&doc(
        &format!("{SERVER}\ntoken_wait_timeout = \"60s\""),
        APP,
        "",
    ));
    assert_eq!(config.server.token_wait_timeout, Duration::from_secs(60));
}

// ----- errors -----

#[test]
fn unknown_keys_are_rejected_naming_the_key_and_line() {
    let e = err(&doc(&format!("{SERVER}\nlisen = \"127.0.0.1:1\""), APP, ""));
    let shown = e.to_string();
    assert!(
        shown.starts_with("wxbroker.toml: line 3, column 1: unknown field `lisen`"),
        "{shown}"
    );
    assert!(matches!(e, ConfigError::Syntax { .. }));

    let e = err(&app_with("secret_envv = \"X\""));
    assert!(e.to_string().contains("unknown field `secret_envv`"), "{e}");
    let e = err(&doc(SERVER, APP, "[metrics]\nlisten = \"x\""));
    assert!(e.to_string().contains("unknown field `metrics`"), "{e}");
}

#[test]
fn toml_syntax_errors_keep_the_toml_message() {
    let e = err("[server\nlisten = 1");
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with("wxbroker.toml: line 1, column "),
        "{e}"
    );
    // A wrong type is reported by toml too, with the line.
    let e = err(&doc(SERVER, &format!("{APP}\ndaily_budget = \"many\""), ""));
    assert!(
        e.to_string()
            .starts_with("wxbroker.toml: line 8, column 16: invalid type"),
        "{e}"
    );
}

/// (what, document, key the error must name, text the message must contain)
fn invalid_cases() -> Vec<(&'static str, String, &'static str, &'static str)> {
    let unix = "unix_socket = \"/tmp/wx.sock\"";
    vec![
        ("no server", format!("[[apps]]\n{APP}"), "server", "set listen, unix_socket or both"),
        ("no listener", doc("max_connections = 5", APP, ""), "server", "set listen, unix_socket or both"),
        ("host name", doc("listen = \"localhost:8930\"", APP, ""), "server.listen", "localhost:8930"),
        (
            "open listen, no header",
            doc("listen = \"0.0.0.0:8930\"\nrequire_client_header = false", APP, ""),
            "server.require_client_header",
            "must be true",
        ),
        ("mode without socket", doc(&format!("{SERVER}\nsocket_mode = \"0600\""), APP, ""), "server.socket_mode", "unix_socket"),
        ("group without socket", doc(&format!("{SERVER}\nsocket_group = \"wx\""), APP, ""), "server.socket_group", "unix_socket"),
        ("empty group", doc(&format!("{unix}\nsocket_group = \"\""), APP, ""), "server.socket_group", "non-empty"),
        ("long socket path", doc(&format!("unix_socket = \"/{}\"", "s".repeat(120)), APP, ""), "server.unix_socket", "limited to 107"),
        ("empty socket path", doc("unix_socket = \"\"", APP, ""), "server.unix_socket", "must not be empty"),
        ("zero connections", doc(&format!("{SERVER}\nmax_connections = 0"), APP, ""), "server.max_connections", "at least 1"),
        ("no request threads", doc(&format!("{SERVER}\nrequest_threads = 0"), APP, ""), "server.request_threads", "from 1 to 256"),
        ("request threads galore", doc(&format!("{SERVER}\nrequest_threads = 4096"), APP, ""), "server.request_threads", "from 1 to 256"),
        ("clashing listeners", doc(&format!("{SERVER}\nmetrics_listen = \"127.0.0.1:8930\""), APP, ""), "server.metrics_listen", "already used by server.listen"),
        ("bad compat addr", doc(&format!("{SERVER}\nwechat_compat_listen = \"8931\""), APP, ""), "server.wechat_compat_listen", "IP:PORT"),
        ("long wait", doc(&format!("{SERVER}\ntoken_wait_timeout = \"2m\""), APP, ""), "server.token_wait_timeout", "at most 1m"),
        ("no body time", doc(&format!("{SERVER}\nbody_timeout = \"0s\""), APP, ""), "server.body_timeout", "greater than zero"),
        ("endless write", doc(&format!("{SERVER}\nwrite_timeout = \"2h\""), APP, ""), "server.write_timeout", "at most 1h"),
        ("unknown backend", doc(SERVER, APP, "[store]\nbackend = \"sqlite\""), "store.backend", "\"sqlite\" is not one of \"memory\", \"file\", \"redis\""),
        ("file without path", doc(SERVER, APP, "[store]\nbackend = \"file\""), "store.path", "required"),
        ("redis without url", doc(SERVER, APP, "[store]\nbackend = \"redis\""), "store.url", "required"),
        ("redis bad scheme", doc(SERVER, APP, "[store]\nbackend = \"redis\"\nurl = \"http://h\""), "store.url", "must start with redis://"),
        ("redis no host", doc(SERVER, APP, "[store]\nbackend = \"redis\"\nurl = \"redis://\""), "store.url", "no host"),
        ("url with file", doc(SERVER, APP, "[store]\nbackend = \"file\"\npath = \"/x\"\nurl = \"redis://h\""), "store.url", "applies only to backend \"redis\""),
        ("path with memory", doc(SERVER, APP, "[store]\npath = \"/x\""), "store.path", "applies only to backend \"file\""),
        ("empty prefix", doc(SERVER, APP, "[store]\nkey_prefix = \"\""), "store.key_prefix", "non-empty"),
        ("log format", doc(SERVER, APP, "[log]\nformat = \"xml\""), "log.format", "\"xml\""),
        ("log level", doc(SERVER, APP, "[log]\nlevel = \"verbose\""), "log.level", "not a level"),
        ("empty audit file", doc(SERVER, APP, "[log]\naudit_file = \"\""), "log.audit_file", "must not be empty"),
        ("audit bound alone", doc(SERVER, APP, "[log]\naudit_max_bytes = 1048576"), "log.audit_max_bytes", "applies only with log.audit_file"),
        ("tiny audit bound", doc(SERVER, APP, "[log]\naudit_file = \"/var/log/wxbroker/audit.jsonl\"\naudit_max_bytes = 100"), "log.audit_max_bytes", "at least 4096"),
        ("no apps", format!("[server]\n{SERVER}"), "apps", "at least one [[apps]]"),
        ("missing name", doc(SERVER, "appid = \"wx1\"\nsecret_env = \"SHOP_SECRET\"", ""), "apps[0].name", "required"),
        ("bad name", doc(SERVER, "name = \"Shop\"\nappid = \"wx1\"\nsecret_env = \"SHOP_SECRET\"", ""), "apps[0].name", "a-z, 0-9, _ and -"),
        ("long name", doc(SERVER, &format!("name = \"{}\"", "a".repeat(33)), ""), "apps[0].name", "1 to 32"),
        (
            "duplicate name",
            doc(SERVER, APP, &format!("[[apps]]\n{APP}")),
            "apps[1].name",
            "already the name of apps[0]",
        ),
        (
            "same appid and grant",
            doc(SERVER, APP, "[[apps]]\nname = \"twin\"\nappid = \"wx1234567890abcdef\"\nsecret_env = \"SHOP_SECRET\""),
            "apps.twin.appid",
            "app \"shop\" already uses this appid",
        ),
        ("kind", app_with("kind = \"miniprogram\""), "apps.shop.kind", "\"miniprogram\" is not one of"),
        ("grant", app_with("grant = \"fast\""), "apps.shop.grant", "\"fast\""),
        ("grant on wecom", app_with("kind = \"wecom\"\ngrant = \"classic\""), "apps.shop.grant", "grant applies to wechat apps only"),
        ("missing appid", doc(SERVER, "name = \"shop\"\nsecret_env = \"SHOP_SECRET\"", ""), "apps.shop.appid", "required"),
        ("empty appid", doc(SERVER, "name = \"shop\"\nappid = \"\"\nsecret_env = \"SHOP_SECRET\"", ""), "apps.shop.appid", "non-empty"),
        ("appid with space", doc(SERVER, "name = \"shop\"\nappid = \"wx 1\"\nsecret_env = \"SHOP_SECRET\"", ""), "apps.shop.appid", "without spaces"),
        ("no secret", doc(SERVER, "name = \"shop\"\nappid = \"wx1\"", ""), "apps.shop", "set exactly one of secret_env, secret_file or secret (none is set)"),
        ("two secrets", app_with("secret_file = \"/x\""), "apps.shop", "(secret_env and secret_file are set)"),
        ("unset env", doc(SERVER, "name = \"shop\"\nappid = \"wx1\"\nsecret_env = \"NOT_SET\"", ""), "apps.shop.secret_env", "environment variable NOT_SET is not set"),
        ("empty env", doc(SERVER, "name = \"shop\"\nappid = \"wx1\"\nsecret_env = \"EMPTY_SECRET\"", ""), "apps.shop.secret_env", "environment variable EMPTY_SECRET is empty"),
        ("bad env name", doc(SERVER, "name = \"shop\"\nappid = \"wx1\"\nsecret_env = \"shop-secret\"", ""), "apps.shop.secret_env", "not a plausible environment variable name"),
        ("missing file", doc(SERVER, "name = \"shop\"\nappid = \"wx1\"\nsecret_file = \"/nonexistent/shop\"", ""), "apps.shop.secret_file", "cannot read /nonexistent/shop"),
        ("empty inline", doc(SERVER, "name = \"shop\"\nappid = \"wx1\"\nsecret = \"\"", ""), "apps.shop.secret", "the secret is empty"),
        ("refresh too long", app_with("refresh_before = \"2h\""), "apps.shop.refresh_before", "must be shorter than the token lifetime (2h)"),
        ("refresh zero", app_with("refresh_before = \"0s\""), "apps.shop.refresh_before", "greater than zero"),
        ("refresh as integer", app_with("refresh_before = 300"), "apps.shop.refresh_before", "quoted duration"),
        ("refresh as words", app_with("refresh_before = \"soon\""), "apps.shop.refresh_before", "\"soon\" is not a duration"),
        ("budget zero", app_with("daily_budget = 0"), "apps.shop.daily_budget", "at least 1"),
        ("budget negative", app_with("daily_budget = -3"), "apps.shop.daily_budget", "at least 1"),
        ("forced interval", app_with("min_forced_interval = \"often\""), "apps.shop.min_forced_interval", "not a duration"),
        ("fetch timeout zero", app_with("fetch_timeout = \"0s\""), "apps.shop.fetch_timeout", "greater than zero"),
        ("fetch timeout long", app_with("fetch_timeout = \"61s\""), "apps.shop.fetch_timeout", "at most 1m"),
        ("api base scheme", app_with("api_base = \"api.weixin.qq.com\""), "apps.shop.api_base", "must start with https://"),
        ("api base userinfo", app_with("api_base = \"https://user:pw@api.weixin.qq.com\""), "apps.shop.api_base", "must not hold a user name or password"),
        ("api base port", app_with("api_base = \"https://api.weixin.qq.com:99999\""), "apps.shop.api_base", "not a valid URL"),
        (
            "tls files unreadable",
            doc(&format!("{SERVER}\nwechat_compat_listen = \"127.0.0.1:8931\"\n[server.compat_tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\""), APP, ""),
            "server.compat_tls.cert_file",
            "cannot read",
        ),
        (
            "tls key missing",
            doc(&format!("{SERVER}\nwechat_compat_listen = \"127.0.0.1:8931\"\n[server.compat_tls]\ncert_file = \"/x.pem\""), APP, ""),
            "server.compat_tls.key_file",
            "required",
        ),
        ("resolver", doc(SERVER, APP, "[upstream]\nresolve = \"mdns\""), "upstream.resolve", "not one of system, dns"),
        (
            "connect_to address",
            doc(SERVER, APP, "[upstream]\nconnect_to = { \"api.weixin.qq.com\" = \"somewhere\" }"),
            "upstream.connect_to.api.weixin.qq.com",
            "IP:PORT",
        ),
        (
            "connect_to host",
            doc(SERVER, APP, "[upstream]\nconnect_to = { \"api weixin\" = \"127.0.0.1:1\" }"),
            "upstream.connect_to.api weixin",
            "not a host name",
        ),
        ("app compat clash", app_with("compat_listen = \"127.0.0.1:8930\""), "apps.shop.compat_listen", "already server.listen"),
        (
            "api_base at the compatible listener",
            doc(&format!("{SERVER}\nwechat_compat_listen = \"127.0.0.1:8931\""), &format!("{APP}\napi_base = \"http://127.0.0.1:8931\""), ""),
            "apps.shop.api_base",
            "reaches this broker's own server.wechat_compat_listen (127.0.0.1:8931)",
        ),
        (
            "api_base at a listener on every address",
            doc("listen = \"0.0.0.0:8930\"", &format!("{APP}\napi_base = \"http://localhost:8930/\""), ""),
            "apps.shop.api_base",
            "reaches this broker's own server.listen (0.0.0.0:8930)",
        ),
        (
            "api_base at an app's own compatible listener",
            app_with("compat_listen = \"127.0.0.1:8932\"\napi_base = \"http://[::ffff:127.0.0.1]:8932\""),
            "apps.shop.api_base",
            "apps.shop.compat_listen",
        ),
        (
            "connect_to at a listener",
            doc(SERVER, APP, "[upstream]\nconnect_to = { \"api.weixin.qq.com\" = \"127.0.0.1:8930\" }"),
            "upstream.connect_to.api.weixin.qq.com",
            "reaches this broker's own server.listen",
        ),
        (
            "connect_to without a port, api_base with the listener's",
            doc(SERVER, &format!("{APP}\napi_base = \"http://api.weixin.qq.com:8930\""), "[upstream]\nconnect_to = { \"api.weixin.qq.com\" = \"127.0.0.1:0\" }"),
            "apps.shop.api_base",
            "server.listen",
        ),
        (
            "platform api_base at the callback listener",
            "[server]\nlisten = \"127.0.0.1:8930\"\ncallback_listen = \"127.0.0.1:8940\"\n\n[[platforms]]\nname = \"saas\"\ncomponent_appid = \"wxcomponent0000001\"\nsecret = \"component-secret-0123456789\"\ntoken = \"msgtoken\"\naes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\napi_base = \"http://127.0.0.1:8940\"\n".to_owned(),
            "platforms.saas.api_base",
            "server.callback_listen",
        ),
        (
            "remote budget without a remote listener",
            doc(&format!("{SERVER}\nremote_max_connections = 8"), APP, ""),
            "server.remote_max_connections",
            "applies only with server.remote_listen",
        ),
        (
            "watch cap without a remote listener",
            doc(&format!("{SERVER}\nremote_max_watches_per_client = 8"), APP, ""),
            "server.remote_max_watches_per_client",
            "applies only with server.remote_listen",
        ),
        ("app compat addr", app_with("compat_listen = \"localhost:1\""), "apps.shop.compat_listen", "IP:PORT"),
    ]
}

#[test]
fn compat_tls_needs_a_compatible_listener_and_loads_what_tls_init_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let issued = wxbroker::tls::init(dir.path()).unwrap();
    let tls = format!(
        "[server.compat_tls]\ncert_file = \"{}\"\nkey_file = \"{}\"",
        issued.cert.display(),
        issued.key.display()
    );
    let e = err(&doc(&format!("{SERVER}\n{tls}"), APP, ""));
    assert_eq!(e.key(), Some("server.compat_tls"), "{e}");
    let per_app = ok(&doc(
        &format!("{SERVER}\n{tls}"),
        &format!("{APP}\ncompat_listen = \"127.0.0.1:8932\""),
        "",
    ));
    assert!(per_app.server.compat_tls.is_some());
    assert_eq!(
        per_app.apps[0].compat_listen,
        Some("127.0.0.1:8932".parse().unwrap())
    );
    let pinned = ok(&doc(SERVER, APP, "[upstream]\nresolve = \"dns\"\nconnect_to = { \"API.weixin.qq.com\" = \"127.0.0.1:9443\" }"));
    assert_eq!(
        pinned.upstream.connect_to,
        [(
            "api.weixin.qq.com".to_owned(),
            "127.0.0.1:9443".parse().unwrap()
        )]
    );
}

#[test]
fn each_invalid_value_is_named_by_its_key() {
    for (what, text, key, message) in invalid_cases() {
        let e = err(&text);
        let shown = e.to_string();
        assert_eq!(e.key(), Some(key), "{what}: {shown}");
        assert!(
            shown.starts_with(&format!("{SOURCE}: {key}: ")),
            "{what}: {shown}"
        );
        assert!(
            shown.contains(message),
            "{what}: {shown:?} lacks {message:?}"
        );
    }
}

#[test]
fn the_refresh_before_message_reads_as_documented() {
    let e = err(&app_with("refresh_before = \"2h\""));
    assert_eq!(
        e.to_string(),
        "wxbroker.toml: apps.shop.refresh_before: must be shorter than the token lifetime (2h)"
    );
}

#[test]
fn a_missing_file_is_named() {
    let e = Config::load(Path::new("/nonexistent/wxbroker.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/wxbroker.toml: cannot read"),
        "{e}"
    );
}

#[test]
fn a_read_error_states_its_cause_once() {
    let e = Config::load(Path::new("/nonexistent/wxbroker.toml")).unwrap_err();
    let cause = std::error::Error::source(&e)
        .expect("the io error is the source")
        .to_string();
    assert!(!e.to_string().contains(&cause), "{e}");
    let chain = format!("{:#}", anyhow::Error::from(e));
    assert_eq!(chain.matches(&cause).count(), 1, "{chain}");
    assert!(
        chain.starts_with("/nonexistent/wxbroker.toml: cannot read the configuration file: "),
        "{chain}"
    );
}

// ----- secrets -----

#[test]
fn secret_from_env_file_and_inline() {
    let config = ok(&doc(
        SERVER,
        "name = \"shop\"\nappid = \"wx1\"\nsecret_env = \"NEWLINE_SECRET\"",
        "",
    ));
    assert_eq!(config.apps[0].secret.expose(), "from-env-with-newline");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop");
    fs::write(&path, "from-file\n").unwrap();
    let app = format!(
        "name = \"shop\"\nappid = \"wx1\"\nsecret_file = \"{}\"",
        path.display()
    );
    let config = ok(&doc(SERVER, &app, ""));
    assert_eq!(config.apps[0].secret.expose(), "from-file");
    assert_eq!(
        config.apps[0].secret_source,
        SecretSource::File(path.clone())
    );

    fs::write(&path, "\n").unwrap();
    let e = err(&doc(SERVER, &app, ""));
    assert_eq!(e.key(), Some("apps.shop.secret_file"));
    assert!(
        e.to_string()
            .contains(&format!("{} is empty", path.display())),
        "{e}"
    );

    let config = ok(&doc(
        SERVER,
        "name = \"shop\"\nappid = \"wx1\"\nsecret = \"inline-one\"",
        "",
    ));
    assert_eq!(config.apps[0].secret.expose(), "inline-one");
    assert_eq!(config.apps[0].secret_source, SecretSource::Inline);
    assert!(config
        .warnings()
        .iter()
        .any(|w| w.contains("apps.shop.secret: ")));
}

#[test]
fn a_secret_never_shows_in_debug_render_or_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("crm");
    fs::write(&file, format!("{CRM_SECRET}\n")).unwrap();
    let text = format!(
        "{}\n[[apps]]\nname = \"inline\"\nappid = \"wx2\"\nsecret = \"inline-s3cr3t\"\n\
         [[apps]]\nname = \"filed\"\nkind = \"wecom\"\nappid = \"ww1\"\nsecret_file = \"{}\"\n\
         [store]\nbackend = \"redis\"\nurl = \"redis://user:redis-pa55@h:6379/0\"\n",
        doc(SERVER, APP, ""),
        file.display()
    );
    let config = ok(&text);
    let everything = format!(
        "{config:?}\n{}\n{}",
        config.render_effective(),
        config.warnings().join("\n")
    );
    for secret in [SHOP_SECRET, CRM_SECRET, "inline-s3cr3t", "redis-pa55"] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked:\n{everything}"
        );
    }
    assert!(everything.contains("redis://user:***@h:6379/0"));
}

/// Runs `f` on a thread of its own and fails the test if it has not
/// returned within `limit`, instead of hanging the test run.
fn finishes_within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tell, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || tell.send(f()));
    answer
        .recv_timeout(limit)
        .expect("finished in time instead of blocking")
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

#[test]
fn a_secret_file_must_be_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("shop.fifo");
    mkfifo(&fifo);
    for (path, kind) in [
        (fifo.clone(), "is a FIFO"),
        (dir.path().to_owned(), "is a directory"),
        (PathBuf::from("/dev/zero"), "is a character device"),
    ] {
        let text = doc(
            SERVER,
            &format!(
                "name = \"shop\"\nappid = \"wx1\"\nsecret_file = \"{}\"",
                path.display()
            ),
            "",
        );
        // A FIFO with no writer blocks an ordinary open for good.
        let e = finishes_within(Duration::from_secs(10), move || parse(&text).unwrap_err());
        assert_eq!(e.key(), Some("apps.shop.secret_file"), "{e}");
        assert!(e.to_string().contains(kind), "{e}");
    }
}

#[test]
fn check_config_refuses_a_fifo_secret_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("shop.fifo");
    mkfifo(&fifo);
    let config = dir.path().join("wxbroker.toml");
    let app = format!(
        "name = \"shop\"\nappid = \"wx1\"\nsecret_file = \"{}\"",
        fifo.display()
    );
    fs::write(&config, doc(SERVER, &app, "")).unwrap();
    let stderr_path = dir.path().join("stderr");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wxbroker"))
        .args(["check-config", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("wxbroker runs");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            // Only this child, by its handle.
            let _ = child.kill();
            let _ = child.wait();
            panic!("check-config blocked on the FIFO");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = fs::read_to_string(&stderr_path).unwrap();
    // 1: check-config's documented exit for a configuration naming a bad key.
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("apps.shop.secret_file") && stderr.contains("FIFO"),
        "{stderr}"
    );
}

#[test]
fn url_passwords_never_show_and_the_real_host_is_judged() {
    const PASSWORD: &str = "hunter2-url-password";
    // api_base never needs userinfo: refused by name, the password masked
    // in the message whatever else is wrong with the value.
    for api_base in [
        format!("https://user:{PASSWORD}@api.weixin.qq.com"),
        format!("https://{PASSWORD}@api.weixin.qq.com"),
        format!("http://localhost:{PASSWORD}@wechat.example.com"),
        format!("https://user:{PASSWORD}/x@api.weixin.qq.com"),
        format!("htps://user:{PASSWORD}@api.weixin.qq.com"),
        format!("https://user:{PASSWORD}@api.weixin.qq.com?x=1"),
    ] {
        let e = err(&app_with(&format!("api_base = \"{api_base}\"")));
        let shown = format!("{e}\n{e:?}");
        assert_eq!(e.key(), Some("apps.shop.api_base"), "{shown}");
        assert!(!shown.contains(PASSWORD), "leaked in:\n{shown}");
    }

    // A Redis password is legitimate: kept, and masked wherever shown.
    let config = ok(&doc(
        SERVER,
        APP,
        &format!(
            "[store]\nbackend = \"redis\"\nurl = \"redis://{PASSWORD}@redis.internal:6379/0\""
        ),
    ));
    let StoreBackend::Redis(redis) = &config.store.backend else {
        panic!("a redis store");
    };
    assert_eq!(
        redis.url,
        format!("redis://{PASSWORD}@redis.internal:6379/0")
    );
    let shown = format!("{config:?}\n{}", config.render_effective());
    assert!(!shown.contains(PASSWORD), "leaked in:\n{shown}");
    assert!(
        shown.contains("redis://***@redis.internal:6379/0"),
        "{shown}"
    );

    // The plain-http warning judges the host after the userinfo (an
    // api_base built in code skips validation).
    let mut config = ok(&app_with("api_base = \"http://127.0.0.1:9000\""));
    assert_eq!(config.warnings(), Vec::<String>::new());
    config.apps[0].api_base = format!("http://localhost:{PASSWORD}@wechat.example.com");
    let warnings = config.warnings().join("\n");
    assert!(
        warnings.contains("apps.shop.api_base: plain http"),
        "{warnings}"
    );
    let rendered = config.render_effective();
    assert!(!rendered.contains(PASSWORD), "leaked in:\n{rendered}");
}

#[test]
fn check_config_shows_no_url_password() {
    const PASSWORD: &str = "hunter2-url-password";
    let dir = tempfile::tempdir().unwrap();
    let run = |text: String| {
        let path = dir.path().join("wxbroker.toml");
        fs::write(&path, text).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_wxbroker"))
            .args(["check-config", "--config"])
            .arg(&path)
            .env("SHOP_SECRET", SHOP_SECRET)
            .output()
            .expect("wxbroker runs");
        let printed = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(!printed.contains(PASSWORD), "leaked in:\n{printed}");
        (output.status.code(), printed)
    };

    let (code, printed) = run(doc(
        SERVER,
        APP,
        &format!("[store]\nbackend = \"redis\"\nurl = \"redis://:{PASSWORD}@127.0.0.1:6379/0\""),
    ));
    assert_eq!(code, Some(0), "{printed}");
    assert!(
        printed.contains("url = \"redis://:***@127.0.0.1:6379/0\""),
        "{printed}"
    );

    let (code, printed) = run(app_with(&format!(
        "api_base = \"http://localhost:{PASSWORD}@wechat.example.com\""
    )));
    assert_eq!(code, Some(1), "{printed}");
    assert!(
        printed.contains("apps.shop.api_base: \"http://localhost:***@wechat.example.com\""),
        "{printed}"
    );
}

#[test]
fn a_secret_never_shows_in_errors() {
    let secret = "Sup3rS3cretValue";
    let app = |secret_line: &str| {
        format!("name = \"shop\"\nappid = \"wx1\"\n{secret_line}\nfetch_timeout = \"2m\"")
    };
    let cases = [
        // a later key is wrong: the error is about it, not the secret
        app(&format!("secret = \"{secret}\"")),
        // unterminated string, a value outside quotes, a number
        app(&format!("secret = \"{secret}")),
        app(&format!("secret = {secret}")),
        app("secret = 3141592653589793"),
        // a space inside the secret
        app(&format!("secret = \"{secret} x\"")),
        // the secret pasted where a variable name or path belongs
        app(&format!("secret_env = \"{SHOP_SECRET}\"")),
        app(&format!("secret_file = \"{SHOP_SECRET}\"")),
        // a misspelt key holding the secret
        app(&format!("secert = \"{secret}\"")),
    ];
    for text in cases {
        let e = err(&doc(SERVER, &text, ""));
        let shown = format!("{e}\n{e:?}");
        for value in [secret, "3141592653589793", SHOP_SECRET] {
            assert!(!shown.contains(value), "leaked in:\n{shown}");
        }
    }
}

// ----- render_effective -----

#[test]
fn render_effective_shows_defaults_and_parses_back() {
    let text = fs::read_to_string(fixture("full.toml")).unwrap();
    for config in [
        ok(&text),
        ok(&app_with("")),
        ok(&app_with("kind = \"wecom\"")),
        ok(&app_with(
            "kind = \"wecom\"\ntickets = [\"agent_config\", \"jsapi\"]\nagentid = 1000002\n[apps.ticket_budget]\njsapi = 50",
        )),
    ] {
        let rendered = config.render_effective();
        let again = parse(&rendered)
            .unwrap_or_else(|e| panic!("render does not parse back: {e}\n{rendered}"));
        assert_eq!(again.render_effective(), rendered);
    }
    let rendered = ok(&app_with("")).render_effective();
    for line in [
        "[server]",
        "listen = \"127.0.0.1:8930\"",
        "# unix_socket: not set (disabled)",
        "max_connections = 1024",
        "token_wait_timeout = \"10s\"",
        "backend = \"memory\"",
        "key_prefix = \"wxbroker\"",
        "format = \"pretty\"",
        "# audit_file: not set (disabled)",
        "grant = \"classic\"",
        "secret_env = \"SHOP_SECRET\"",
        "refresh_before = \"5m\"",
        "api_base = \"https://api.weixin.qq.com\"",
    ] {
        assert!(
            rendered.lines().any(|l| l == line),
            "missing {line:?} in\n{rendered}"
        );
    }
    let rendered = ok(&text).render_effective();
    assert!(rendered.contains("socket_mode = \"0640\""), "{rendered}");
    assert!(
        rendered.contains(
            "audit_file = \"/var/log/wxbroker/audit.jsonl\"\naudit_max_bytes = 16777216\n"
        ),
        "{rendered}"
    );
    assert!(
        rendered.contains("refresh_before = \"1h 30m\""),
        "{rendered}"
    );
    assert!(
        !rendered.contains("grant = \"classic\""),
        "wecom apps have no grant:\n{rendered}"
    );
}

#[test]
fn render_effective_masks_an_inline_secret() {
    let config = ok(&doc(
        SERVER,
        "name = \"shop\"\nappid = \"wx1\"\nsecret = \"inline-value\"",
        "",
    ));
    let rendered = config.render_effective();
    assert!(rendered.contains("secret = \"***\""), "{rendered}");
    assert!(!rendered.contains("inline-value"));
}

// ----- warnings -----

#[test]
fn a_plain_config_has_no_warnings() {
    assert_eq!(ok(&app_with("")).warnings(), Vec::<String>::new());
    let text = fs::read_to_string(fixture("full.toml")).unwrap();
    assert_eq!(ok(&text).warnings(), Vec::<String>::new());
}

#[test]
fn risky_settings_are_warned_about() {
    let server = "listen = \"0.0.0.0:8930\"\nmetrics_listen = \"[::]:9930\"\n\
                  wechat_compat_listen = \"10.0.0.5:8931\"\nunix_socket = \"/tmp/s\"\n\
                  socket_mode = \"0666\"";
    let app = format!(
        "{APP}\nrefresh_before = \"119m\"\ndaily_budget = 100\nmin_forced_interval = \"0s\"\n\
         api_base = \"http://wechat.example.com\""
    );
    let warnings = ok(&doc(server, &app, "")).warnings();
    for key in [
        "server.listen",
        "server.metrics_listen",
        "server.wechat_compat_listen",
        "server.socket_mode",
        "apps.shop.refresh_before",
        "apps.shop.min_forced_interval",
        "apps.shop.api_base",
    ] {
        let prefix = format!("{SOURCE}: {key}: ");
        assert!(
            warnings.iter().any(|w| w.starts_with(&prefix)),
            "no warning for {key} in {warnings:#?}"
        );
    }
    assert_eq!(warnings.len(), 7, "{warnings:#?}");
}

#[cfg(unix)]
#[test]
fn files_readable_by_others_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("shop");
    fs::write(&secret, "s3cr3t\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let text = doc(
        SERVER,
        &format!(
            "name = \"shop\"\nappid = \"wx1\"\nsecret_file = \"{}\"",
            secret.display()
        ),
        "[[apps]]\nname = \"inline\"\nappid = \"wx2\"\nsecret = \"inline-s3cr3t\"",
    );
    let config_file = dir.path().join("wxbroker.toml");
    fs::write(&config_file, &text).unwrap();
    fs::set_permissions(&config_file, fs::Permissions::from_mode(0o644)).unwrap();

    let config = Config::load(&config_file).unwrap();
    assert_eq!(config.source, config_file.display().to_string());
    let warnings = config.warnings();
    let has = |needle: &str| warnings.iter().any(|w| w.contains(needle));
    assert!(has("apps.shop.secret_file: "), "{warnings:#?}");
    assert!(has("mode 0644"), "{warnings:#?}");
    assert!(
        has("holds inline secrets (apps.inline.secret)"),
        "{warnings:#?}"
    );

    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&config_file, fs::Permissions::from_mode(0o640)).unwrap();
    let warnings = Config::load(&config_file).unwrap().warnings();
    // Only the inline secret itself is left to warn about.
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("apps.inline.secret: "),
        "{warnings:#?}"
    );
}

#[test]
fn redis_topologies_passwords_and_their_mistakes() {
    let store = |lines: &str| {
        doc(
            SERVER,
            APP,
            &format!("[store]\nbackend = \"redis\"\n{lines}"),
        )
    };
    for url in [
        "redis+sentinel://s1:26379,s2:26379/mymaster",
        "redis+sentinel://s1/mymaster/2",
        "rediss+sentinel://s1,s2/mymaster",
        "redis+cluster://h1:7000,h2:7001,h3:7002",
        "rediss+cluster://h1:7000,h2:7001",
    ] {
        let config = ok(&store(&format!("url = \"{url}\"")));
        let StoreBackend::Redis(redis) = &config.store.backend else {
            panic!("a redis store");
        };
        assert_eq!(redis.url, url);
    }

    // A password from the environment: used, never shown.
    let config = ok(&store(
        "url = \"redis+cluster://h1:7000,h2:7001\"\npassword_env = \"SHOP_SECRET\"",
    ));
    let shown = format!("{config:?}\n{}", config.render_effective());
    assert!(!shown.contains(SHOP_SECRET), "leaked in:\n{shown}");
    assert!(shown.contains("password_env = \"SHOP_SECRET\""), "{shown}");

    // A password file: read like secret_file, and warned about when every
    // local user may read it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis.password");
    std::fs::write(&file, "from-a-file\n").unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let config = ok(&store(&format!(
        "url = \"redis://h\"\npassword_file = \"{}\"",
        file.display()
    )));
    let shown = format!("{config:?}\n{}", config.render_effective());
    assert!(!shown.contains("from-a-file"), "leaked in:\n{shown}");
    let warnings = config.warnings().join("\n");
    assert!(warnings.contains("store.password_file: "), "{warnings}");

    for (name, lines, key, message) in [
        (
            "malformed",
            "url = \"redis+sentinel://s1:port/m\"",
            "store.url",
            "bad port",
        ),
        (
            "no master",
            "url = \"redis+sentinel://s1:26379,s2:26379\"",
            "store.url",
            "names no master",
        ),
        (
            "one cluster node",
            "url = \"redis+cluster://h1:7000\"",
            "store.url",
            "names one node",
        ),
        (
            "cluster database",
            "url = \"redis+cluster://h1:7000,h2:7001/2\"",
            "store.url",
            "only database 0",
        ),
        (
            "unknown scheme",
            "url = \"redis+sentinal://s1/m\"",
            "store.url",
            "must start with",
        ),
        (
            "two passwords",
            "url = \"redis://:url-pw@h:6379/0\"\npassword_env = \"SHOP_SECRET\"",
            "store.password_env",
            "holds a password too",
        ),
        (
            "two password sources",
            "url = \"redis://h\"\npassword_env = \"SHOP_SECRET\"\npassword_file = \"/x\"",
            "store",
            "at most one of password_env or password_file",
        ),
        (
            "unset password env",
            "url = \"redis://h\"\npassword_env = \"NOT_SET\"",
            "store.password_env",
            "is not set",
        ),
        (
            "ca without tls",
            "url = \"redis://h\"\nca_file = \"/x\"",
            "store.ca_file",
            "applies only to TLS",
        ),
        (
            "missing ca",
            "url = \"rediss://h\"\nca_file = \"/nonexistent/ca.pem\"",
            "store.ca_file",
            "cannot read",
        ),
    ] {
        let e = err(&store(lines)).to_string();
        assert!(
            e.contains(&format!("{key}: ")) && e.contains(message),
            "{name}: {e}"
        );
        assert!(
            !e.contains("url-pw") && !e.contains(SHOP_SECRET),
            "{name}: {e}"
        );
    }
    let e = err(&doc(
        SERVER,
        APP,
        "[store]\nbackend = \"file\"\npath = \"/x\"\npassword_env = \"SHOP_SECRET\"",
    ))
    .to_string();
    assert!(
        e.contains("store.password_env: applies only to backend \"redis\""),
        "{e}"
    );

    // A fleet's refresh lock must fit in the refresh window.
    let redis = "[store]\nbackend = \"redis\"\nurl = \"redis://h\"";
    let e = err(&doc(
        SERVER,
        &format!("{APP}\nrefresh_before = \"10s\""),
        redis,
    ))
    .to_string();
    assert!(
        e.contains("apps.shop.refresh_before: ") && e.contains("at least 33s"),
        "{e}"
    );
    ok(&doc(
        SERVER,
        &format!("{APP}\nrefresh_before = \"10s\""),
        "",
    ));
    ok(&doc(
        SERVER,
        &format!("{APP}\nrefresh_before = \"10s\"\nfetch_timeout = \"2s\""),
        redis,
    ));
}

#[test]
fn platforms_run_on_every_redis_topology() {
    let platform = "[[platforms]]\nname = \"saas\"\ncomponent_appid = \"wxcomponent0000001\"\nsecret = \"component-secret-0123456789\"\ntoken = \"msgtoken\"\naes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\n";
    let config = |url: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:8930\"\ncallback_listen = \"127.0.0.1:8940\"\n\n[store]\nbackend = \"redis\"\nurl = \"{url}\"\n\n{platform}"
        )
    };
    for url in [
        "redis://127.0.0.1:6379/0",
        "redis+sentinel://s1:26379,s2:26379/mymaster",
        "redis+cluster://h1:7000,h2:7001,h3:7002",
    ] {
        ok(&config(url));
    }
}

// ----- WeCom suites -----

const SUITE_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const SUITE_SECRET: &str = "suite-S3cret-0123456789abcdef";
const SUITE_TOKEN: &str = "callbackTok3n-value";
const PROVIDER_SECRET: &str = "provider-S3cret-0123456789abcdef";

fn suite_env(name: &str) -> Option<String> {
    match name {
        "CRM_SUITE_SECRET" => Some(SUITE_SECRET.to_owned()),
        "CRM_MSG_TOKEN" => Some(SUITE_TOKEN.to_owned()),
        "CRM_AES_KEY" => Some(SUITE_KEY.to_owned()),
        "PROVIDER_SECRET" => Some(PROVIDER_SECRET.to_owned()),
        "SHORT_AES_KEY" => Some("abc".to_owned()),
        other => env(other),
    }
}

/// A document with a callback listener and the given `[[suites]]` bodies
/// (no apps: suites alone are a configuration).
fn suites_doc(suites: &[&str], rest: &str) -> String {
    let mut text =
        "[server]\nlisten = \"127.0.0.1:8930\"\ncallback_listen = \"127.0.0.1:8940\"\n".to_owned();
    for suite in suites {
        text.push_str(&format!("\n[[suites]]\n{suite}\n"));
    }
    text.push_str(rest);
    text
}

/// The `crm` suite from the environment, with `extra` keys.
fn crm(extra: &str) -> String {
    format!(
        "name = \"crm\"\nsuite_id = \"wwsuite0000000001\"\nprovider_corpid = \"wwprovider000001\"\n\
         secret_env = \"CRM_SUITE_SECRET\"\ntoken_env = \"CRM_MSG_TOKEN\"\naes_key_env = \"CRM_AES_KEY\"\n{extra}"
    )
}

fn suite_parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str_with_env(SOURCE, text, &suite_env)
}

#[test]
fn a_suite_reads_its_secrets_and_defaults() {
    let config = suite_parse(&suites_doc(&[&crm("")], "")).unwrap();
    assert!(config.apps.is_empty(), "a suite alone is a configuration");
    let suite = config.suite("crm").unwrap();
    assert_eq!(suite.suite_id, "wwsuite0000000001");
    assert_eq!(suite.provider_corpid, "wwprovider000001");
    assert_eq!(suite.secret.expose(), SUITE_SECRET);
    assert_eq!(suite.token.expose(), SUITE_TOKEN);
    assert_eq!(suite.aes_key.expose(), SUITE_KEY);
    assert_eq!(
        suite.secret_source,
        SecretSource::Env("CRM_SUITE_SECRET".into())
    );
    assert!(suite.provider_secret.is_none());
    assert!(!suite.customized);
    assert!(suite.corp_tickets.is_empty());
    assert_eq!(suite.refresh_before, Duration::from_secs(300));
    assert_eq!(suite.daily_budget, 2000);
    assert_eq!(suite.api_base, "https://qyapi.weixin.qq.com");
    assert_eq!(suite.fetch_timeout, Duration::from_secs(10));

    let full = crm(
        "provider_secret_env = \"PROVIDER_SECRET\"\ncustomized = true\n\
         corp_tickets = [\"agent_config\", \"jsapi\"]\nrefresh_before = \"10m\"\ndaily_budget = 500\n\
         api_base = \"http://127.0.0.1:9999/\"\nfetch_timeout = \"5s\"",
    );
    let config = suite_parse(&suites_doc(
        &[&full],
        "\n[[clients]]\nuid = 1001\nsuites = [\"crm\"]\n",
    ))
    .unwrap();
    let suite = &config.suites[0];
    let (provider, from) = suite.provider_secret.as_ref().unwrap();
    assert_eq!(provider.expose(), PROVIDER_SECRET);
    assert_eq!(from, &SecretSource::Env("PROVIDER_SECRET".into()));
    assert!(suite.customized);
    assert_eq!(
        suite.corp_tickets,
        [
            wxbroker::credential::TicketKind::AgentConfig,
            wxbroker::credential::TicketKind::Jsapi
        ]
    );
    assert_eq!(suite.refresh_before, Duration::from_secs(600));
    assert_eq!(suite.daily_budget, 500);
    assert_eq!(suite.api_base, "http://127.0.0.1:9999");
    assert_eq!(suite.fetch_timeout, Duration::from_secs(5));
    assert_eq!(
        config.clients[0].suites,
        ["crm"],
        "clients may name a configured suite"
    );

    // check-config shows every key, the sources of secrets, and parses back.
    let shown = config.render_effective();
    for line in [
        "[[suites]]",
        "name = \"crm\"",
        "suite_id = \"wwsuite0000000001\"",
        "provider_corpid = \"wwprovider000001\"",
        "secret_env = \"CRM_SUITE_SECRET\"",
        "token_env = \"CRM_MSG_TOKEN\"",
        "aes_key_env = \"CRM_AES_KEY\"",
        "provider_secret_env = \"PROVIDER_SECRET\"",
        "customized = true",
        "corp_tickets = [\"agent_config\", \"jsapi\"]",
        "refresh_before = \"10m\"",
        "daily_budget = 500",
        "fetch_timeout = \"5s\"",
    ] {
        assert!(shown.contains(line), "{line} missing from:\n{shown}");
    }
    let again = suite_parse(&shown).unwrap();
    assert_eq!(again.suites, config.suites);
}

#[test]
fn suite_secrets_never_show_in_check_config_debug_warnings_or_errors() {
    let inline = format!(
        "name = \"crm\"\nsuite_id = \"wwsuite0000000001\"\nprovider_corpid = \"wwprovider000001\"\n\
         secret = \"{SUITE_SECRET}\"\ntoken = \"{SUITE_TOKEN}\"\naes_key = \"{SUITE_KEY}\"\n\
         provider_secret = \"{PROVIDER_SECRET}\"\n"
    );
    let config = suite_parse(&suites_doc(&[&inline], "")).unwrap();
    let shown = config.render_effective();
    let debug = format!("{config:?}");
    let warnings = config.warnings().join("\n");
    for secret in [SUITE_SECRET, SUITE_TOKEN, SUITE_KEY, PROVIDER_SECRET] {
        assert!(!shown.contains(secret), "{shown}");
        assert!(!debug.contains(secret), "{debug}");
        assert!(!warnings.contains(secret), "{warnings}");
    }
    for field in ["secret", "token", "aes_key", "provider_secret"] {
        assert!(shown.contains(&format!("\n{field} = \"***\"")), "{shown}");
        assert!(
            warnings.contains(&format!(
                "suites.crm.{field}: the {field} is written in the configuration file"
            )),
            "{warnings}"
        );
    }
    // A wrong EncodingAESKey is named, never quoted.
    let bad_key = "K".repeat(44);
    let e = suite_parse(&suites_doc(&[&inline.replace(SUITE_KEY, &bad_key)], "")).unwrap_err();
    assert_eq!(e.key(), Some("suites.crm.aes_key"), "{e}");
    assert!(!e.to_string().contains(&bad_key), "{e}");
    for secret in [SUITE_SECRET, SUITE_TOKEN, PROVIDER_SECRET] {
        assert!(!e.to_string().contains(secret), "{e}");
    }
}

#[test]
fn every_suites_key_mistake_is_named_by_its_key() {
    let without = |key: &str| {
        crm("")
            .lines()
            .filter(|line| !line.starts_with(&format!("{key} ")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let other = crm("")
        .replace("\"crm\"", "\"crm2\"")
        .replace("wwsuite0000000001", "wwsuite0000000002");
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "no name",
            suites_doc(&[&without("name")], ""),
            "suites[0].name",
            "required",
        ),
        (
            "bad name",
            suites_doc(&[&crm("").replace("\"crm\"", "\"CRM app\"")], ""),
            "suites[0].name",
            "not a valid name",
        ),
        (
            "name twice",
            suites_doc(
                &[
                    &crm(""),
                    &crm("").replace("wwsuite0000000001", "wwsuite0000000002"),
                ],
                "",
            ),
            "suites[1].name",
            "already the name of a suite",
        ),
        (
            "no suite_id",
            suites_doc(&[&without("suite_id")], ""),
            "suites.crm.suite_id",
            "required",
        ),
        (
            "suite_id with a space",
            suites_doc(&[&crm("").replace("wwsuite0000000001", "ww suite")], ""),
            "suites.crm.suite_id",
            "printable ASCII",
        ),
        (
            "suite_id twice",
            suites_doc(
                &[
                    &crm(""),
                    &other.replace("wwsuite0000000002", "wwsuite0000000001"),
                ],
                "",
            ),
            "suites.crm2.suite_id",
            "already uses this suite_id",
        ),
        (
            "no provider_corpid",
            suites_doc(&[&without("provider_corpid")], ""),
            "suites.crm.provider_corpid",
            "required",
        ),
        (
            "empty provider_corpid",
            suites_doc(&[&crm("").replace("\"wwprovider000001\"", "\"\"")], ""),
            "suites.crm.provider_corpid",
            "printable ASCII",
        ),
        (
            "no secret",
            suites_doc(&[&without("secret_env")], ""),
            "suites.crm",
            "set exactly one of secret_env, secret_file or secret (none is set)",
        ),
        (
            "two secrets",
            suites_doc(&[&crm("secret = \"inline-value\"")], ""),
            "suites.crm",
            "secret_env and secret are set",
        ),
        (
            "secret variable unset",
            suites_doc(&[&crm("").replace("CRM_SUITE_SECRET", "NO_SUCH_VAR")], ""),
            "suites.crm.secret_env",
            "NO_SUCH_VAR is not set",
        ),
        (
            "secret file missing",
            suites_doc(
                &[&without("secret_env").replace(
                    "token_env",
                    "secret_file = \"/nonexistent/suite-secret\"\ntoken_env",
                )],
                "",
            ),
            "suites.crm.secret_file",
            "cannot read",
        ),
        (
            "no token",
            suites_doc(&[&without("token_env")], ""),
            "suites.crm",
            "set exactly one of token_env, token_file or token",
        ),
        (
            "token variable empty",
            suites_doc(&[&crm("").replace("CRM_MSG_TOKEN", "EMPTY_SECRET")], ""),
            "suites.crm.token_env",
            "is empty",
        ),
        (
            "no aes_key",
            suites_doc(&[&without("aes_key_env")], ""),
            "suites.crm",
            "set exactly one of aes_key_env, aes_key_file or aes_key",
        ),
        (
            "aes_key too short",
            suites_doc(&[&crm("").replace("CRM_AES_KEY", "SHORT_AES_KEY")], ""),
            "suites.crm.aes_key_env",
            "exactly 43 characters",
        ),
        (
            "aes_key inline off the alphabet",
            suites_doc(
                &[&without("aes_key_env").replace(
                    "token_env",
                    &format!("aes_key = \"{}\"\ntoken_env", "-".repeat(43)),
                )],
                "",
            ),
            "suites.crm.aes_key",
            "exactly 43 characters",
        ),
        (
            "provider secret unset",
            suites_doc(&[&crm("provider_secret_env = \"NO_SUCH_VAR\"")], ""),
            "suites.crm.provider_secret_env",
            "NO_SUCH_VAR is not set",
        ),
        (
            "two provider secrets",
            suites_doc(
                &[&crm(
                    "provider_secret_env = \"PROVIDER_SECRET\"\nprovider_secret = \"x-inline\"",
                )],
                "",
            ),
            "suites.crm",
            "provider_secret_env and provider_secret are set",
        ),
        (
            "a ticket WeCom corps lack",
            suites_doc(&[&crm("corp_tickets = [\"wx_card\"]")], ""),
            "suites.crm.corp_tickets[0]",
            "not a ticket a WeCom corp has",
        ),
        (
            "a ticket twice",
            suites_doc(&[&crm("corp_tickets = [\"jsapi\", \"jsapi\"]")], ""),
            "suites.crm.corp_tickets[1]",
            "listed twice",
        ),
        (
            "refresh_before too long",
            suites_doc(&[&crm("refresh_before = \"2h\"")], ""),
            "suites.crm.refresh_before",
            "shorter than the token lifetime",
        ),
        (
            "refresh_before a number",
            suites_doc(&[&crm("refresh_before = 300")], ""),
            "suites.crm.refresh_before",
            "",
        ),
        (
            "refresh_before zero",
            suites_doc(&[&crm("refresh_before = \"0s\"")], ""),
            "suites.crm.refresh_before",
            "",
        ),
        (
            "daily_budget zero",
            suites_doc(&[&crm("daily_budget = 0")], ""),
            "suites.crm.daily_budget",
            "at least 1",
        ),
        (
            "api_base not http",
            suites_doc(&[&crm("api_base = \"ftp://qyapi.weixin.qq.com\"")], ""),
            "suites.crm.api_base",
            "",
        ),
        (
            "api_base at the callback listener",
            suites_doc(&[&crm("api_base = \"http://127.0.0.1:8940\"")], ""),
            "suites.crm.api_base",
            "server.callback_listen",
        ),
        (
            "fetch_timeout too long",
            suites_doc(&[&crm("fetch_timeout = \"2m\"")], ""),
            "suites.crm.fetch_timeout",
            "",
        ),
        (
            "no callback listener",
            format!(
                "[server]\nlisten = \"127.0.0.1:8930\"\n\n[[suites]]\n{}\n",
                crm("")
            ),
            "server.callback_listen",
            "required with [[suites]]",
        ),
        (
            "a client naming an unknown suite",
            suites_doc(
                &[&crm("")],
                "\n[[clients]]\nuid = 1001\nsuites = [\"erp\"]\n",
            ),
            "clients[0].suites",
            "erp",
        ),
    ];
    for (what, text, key, message) in cases {
        let e = match suite_parse(&text) {
            Ok(_) => panic!("{what}: accepted\n---\n{text}"),
            Err(e) => e,
        };
        let shown = e.to_string();
        assert_eq!(e.key(), Some(key), "{what}: {shown}");
        assert!(
            shown.starts_with(&format!("{SOURCE}: {key}: ")),
            "{what}: {shown}"
        );
        assert!(
            shown.contains(message),
            "{what}: {shown:?} lacks {message:?}"
        );
    }

    // Keys the schema does not know, and values of the wrong type, are
    // refused by the parser with their name and line.
    let e = suite_parse(&suites_doc(&[&crm("suite_secret = \"x\"")], "")).unwrap_err();
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
    assert!(
        e.to_string().contains("unknown field `suite_secret`"),
        "{e}"
    );
    let e = suite_parse(&suites_doc(&[&crm("customized = \"yes\"")], "")).unwrap_err();
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
    assert!(e.to_string().contains("invalid type"), "{e}");
}

#[test]
fn the_callback_listener_serves_platforms_or_suites() {
    // With suites alone it is required and accepted; with neither, refused.
    suite_parse(&suites_doc(&[&crm("")], "")).unwrap();
    let e = suite_parse(&doc(
        "listen = \"127.0.0.1:8930\"\ncallback_listen = \"127.0.0.1:8940\"",
        APP,
        "",
    ))
    .unwrap_err();
    assert_eq!(e.key(), Some("server.callback_listen"), "{e}");
    assert!(
        e.to_string()
            .contains("applies only with [[platforms]] or [[suites]]"),
        "{e}"
    );
}
