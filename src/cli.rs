//! The command line (DESIGN.md section 2).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "wxbroker",
    version,
    about = "Owns WeChat access tokens and serves them to local services"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Run the daemon against the built-in WeChat simulator (no credentials needed).
    Demo(DemoArgs),
    /// Run the WeChat simulator alone, for your own integration tests.
    Simulate(SimulateArgs),
    /// Print the current token (for shell scripts).
    Token(TokenArgs),
    /// Validate a config file and print the effective settings, secrets masked.
    CheckConfig(ConfigArgs),
    /// Ask a running broker for /readyz or /livez; exit 0 on 200 (for health checks).
    Probe(ProbeArgs),
    /// WeChat's own count of an API's daily quota (quota/get), asked by
    /// the running broker with its own token.
    Quota(QuotaArgs),
    /// Reset every daily quota of an app's account (clear_quota): 10 a
    /// month per account, shared with the web console. Unix socket only.
    ClearQuota(ClearQuotaArgs),
    /// What WeChat recorded of the call behind the rid in an errmsg
    /// (rid/get; WeChat keeps a rid 7 days).
    Rid(RidArgs),
    /// TLS for the WeChat-compatible listeners.
    #[command(subcommand)]
    Tls(TlsCommand),
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Write a local CA (ca.pem) and a certificate for api.weixin.qq.com,
    /// qyapi.weixin.qq.com, localhost and 127.0.0.1 signed by it (cert.pem,
    /// key.pem); the CA's own key is not kept.
    Init {
        /// Where to write the files (created if missing).
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The TOML configuration file.
    #[arg(long, env = "WXBROKER_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Fetch every app's token, write the sinks, then exit: 0 when every
    /// app got a token, 1 naming those that did not (for init containers
    /// and cron jobs).
    #[arg(long)]
    pub exit_after_token: bool,
    /// How long start-up waits for each app's first token attempt: systemd
    /// is told READY=1 when every app has a token or an error, or when this
    /// passes; --exit-after-token gives up after it.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub start_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// readyz: every app holds a valid token; livez: the daemon is serving.
    #[arg(value_enum, default_value_t = ProbeEndpoint::Readyz)]
    pub endpoint: ProbeEndpoint,
    /// Base URL of the operations listener (metrics_listen) or of the
    /// token API over TCP; no path.
    #[arg(
        long,
        conflicts_with = "socket",
        default_value = "http://127.0.0.1:9930"
    )]
    pub url: String,
    /// Probe over the token API's Unix socket instead of --url.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Give up (and fail) after this long.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProbeEndpoint {
    Readyz,
    Livez,
}

impl ProbeEndpoint {
    pub fn path(self) -> &'static str {
        match self {
            ProbeEndpoint::Readyz => "/readyz",
            ProbeEndpoint::Livez => "/livez",
        }
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Token API over TCP.
    #[arg(long, default_value = "127.0.0.1:8930")]
    pub listen: SocketAddr,
    /// Token API over a Unix socket.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("wxbroker-demo.sock"))]
    pub socket: PathBuf,
    /// /metrics, /livez and /readyz.
    #[arg(long, default_value = "127.0.0.1:9930")]
    pub metrics_listen: SocketAddr,
    /// The WeChat-compatible listener, for SDKs pointed at the broker.
    #[arg(long, default_value = "127.0.0.1:8931")]
    pub compat_listen: SocketAddr,
    /// Where the simulated WeChat API listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub simulator_listen: SocketAddr,
    /// Token lifetime the simulator hands out, e.g. "2m".
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub lifetime: Duration,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Address to listen on, e.g. 127.0.0.1:8940.
    #[arg(long, default_value = "127.0.0.1:8940")]
    pub listen: SocketAddr,
    /// An account as APPID:SECRET or APPID:SECRET:wecom; repeatable.
    /// Without any, one account wxdemo0000000001:demo-secret is created.
    #[arg(long = "account", value_parser = parse_account)]
    pub accounts: Vec<SimAccount>,
    /// Token lifetime (expires_in), e.g. "2h" or "30s".
    #[arg(long, default_value = "2h", value_parser = parse_duration)]
    pub token_lifetime: Duration,
    /// How long a replaced classic token stays valid.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub overlap: Duration,
    /// The stable_token rotation window.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub stable_window: Duration,
    /// Token calls allowed per app per Beijing day before 45009.
    #[arg(long, default_value_t = 2000)]
    pub daily_limit: u32,
    /// A WeCom suite, as comma-separated KEY=VALUE pairs: suite_id,
    /// secret, token, aes_key (43 characters) and provider_corpid are
    /// required; provider_secret, customized=true (a 代开发 template),
    /// callback (the URL its pushes go to), ticket_every (default 10m,
    /// with a callback) and receive_id (suite_id or provider_corpid) are
    /// optional. Repeatable.
    #[arg(long = "suite", value_parser = parse_suite)]
    pub suites: Vec<SimSuiteArg>,
}

/// One `--suite` of `wxbroker simulate`.
#[derive(Debug, Clone)]
pub struct SimSuiteArg {
    pub suite: crate::simulator::SimSuite,
    /// Where its pushes and URL checks go.
    pub callback: Option<String>,
    /// How often a `suite_ticket` is pushed to `callback`.
    pub ticket_every: Duration,
    pub receive_id: crate::simulator::ReceiveId,
}

#[derive(Debug, Clone)]
pub struct SimAccount {
    pub appid: String,
    pub secret: String,
    pub wecom: bool,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The app; may be omitted when the broker serves only one.
    #[arg(long)]
    pub app: Option<String>,
    /// The broker's TCP address.
    #[arg(
        long,
        conflicts_with = "socket",
        default_value = "http://127.0.0.1:8930"
    )]
    pub url: String,
    /// The broker's Unix socket (instead of --url).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// The name sent as Wxbroker-Client.
    #[arg(long, default_value = "wxbroker-cli")]
    pub client: String,
    /// Give up after this long.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// How a command finds the running broker: as `wxbroker token` does.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// The broker's TCP address.
    #[arg(
        long,
        conflicts_with = "socket",
        default_value = "http://127.0.0.1:8930"
    )]
    pub url: String,
    /// The broker's Unix socket (instead of --url).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// The name sent as Wxbroker-Client.
    #[arg(long, default_value = "wxbroker-cli")]
    pub client: String,
    /// Give up after this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct QuotaArgs {
    /// The app, as configured.
    #[arg(long)]
    pub app: String,
    /// The API whose quota to show.
    #[arg(long, default_value = crate::diagnostics::cgi_path::DEFAULT_CGI_PATH, value_parser = parse_cgi_path)]
    pub cgi_path: String,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

#[derive(Debug, Args)]
pub struct ClearQuotaArgs {
    /// The app, as configured.
    #[arg(long)]
    pub app: String,
    /// Required: a reset spends one of the account's 10 a month.
    #[arg(long)]
    pub confirm: bool,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

#[derive(Debug, Args)]
pub struct RidArgs {
    /// The app whose call got the rid.
    #[arg(long)]
    pub app: String,
    /// The rid, as in "... rid: 61725984-6126f6f9-040f19c4".
    #[arg(value_parser = parse_rid)]
    pub rid: String,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

fn parse_cgi_path(text: &str) -> Result<String, String> {
    crate::diagnostics::CgiPath::parse(text)
        .map(|path| path.as_str().to_owned())
        .map_err(|err| err.to_string())
}

fn parse_rid(text: &str) -> Result<String, String> {
    let rid = text.trim();
    let well_formed = !rid.is_empty()
        && rid.len() <= 64
        && rid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if well_formed {
        Ok(rid.to_owned())
    } else {
        Err("a rid is the hex groups after \"rid: \" in an errmsg, such as 61725984-6126f6f9-040f19c4".to_owned())
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| err.to_string())
}

fn parse_account(text: &str) -> Result<SimAccount, String> {
    let mut parts = text.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(appid), Some(secret), kind, None) if !appid.is_empty() && !secret.is_empty() => {
            let wecom = match kind {
                None | Some("wechat") => false,
                Some("wecom") => true,
                Some(other) => {
                    return Err(format!(
                        "unknown account kind {other:?}; use wechat or wecom"
                    ))
                }
            };
            Ok(SimAccount {
                appid: appid.to_owned(),
                secret: secret.to_owned(),
                wecom,
            })
        }
        _ => Err("expected APPID:SECRET or APPID:SECRET:wecom".to_owned()),
    }
}

fn parse_suite(text: &str) -> Result<SimSuiteArg, String> {
    let mut pairs = std::collections::BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("expected KEY=VALUE, got {pair:?}"))?;
        const KEYS: [&str; 10] = [
            "suite_id",
            "secret",
            "token",
            "aes_key",
            "provider_corpid",
            "provider_secret",
            "customized",
            "callback",
            "ticket_every",
            "receive_id",
        ];
        if !KEYS.contains(&key) {
            return Err(format!("unknown key {key:?}; use {}", KEYS.join(", ")));
        }
        if pairs.insert(key, value.to_owned()).is_some() {
            return Err(format!("{key} is given twice"));
        }
    }
    let mut take = |key: &str| pairs.remove(key).filter(|v| !v.is_empty());
    let mut required = |key: &str| take(key).ok_or_else(|| format!("{key} is required"));
    let suite = crate::simulator::SimSuite {
        suite_id: required("suite_id")?,
        suite_secret: required("secret")?,
        token: required("token")?,
        aes_key: required("aes_key")?,
        provider_corpid: required("provider_corpid")?,
        provider_secret: take("provider_secret"),
        customized: match take("customized").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(format!("customized must be true or false, not {other:?}")),
        },
    };
    let aes_key_ok = suite.aes_key.len() == 43
        && suite
            .aes_key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !aes_key_ok {
        return Err("aes_key must be 43 characters of A-Z, a-z, 0-9, + and /".to_owned());
    }
    let ticket_every = match take("ticket_every") {
        None => Duration::from_secs(600),
        Some(text) => parse_duration(&text)?,
    };
    if ticket_every.is_zero() {
        return Err("ticket_every must be longer than 0s".to_owned());
    }
    let receive_id = match take("receive_id") {
        None => crate::simulator::ReceiveId::SuiteId,
        Some(name) => crate::simulator::ReceiveId::from_name(&name).ok_or_else(|| {
            format!("receive_id must be suite_id or provider_corpid, not {name:?}")
        })?,
    };
    Ok(SimSuiteArg {
        suite,
        callback: take("callback"),
        ticket_every,
        receive_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_and_probe_flags() {
        let cli = Cli::parse_from([
            "wxbroker",
            "serve",
            "--config",
            "/etc/wxbroker/wxbroker.toml",
            "--exit-after-token",
            "--start-timeout",
            "5s",
        ]);
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert!(args.exit_after_token);
        assert_eq!(args.start_timeout, Duration::from_secs(5));

        let cli = Cli::parse_from(["wxbroker", "probe", "livez", "--url", "http://127.0.0.1:1"]);
        let Command::Probe(args) = cli.command else {
            panic!("not probe")
        };
        assert_eq!(args.endpoint, ProbeEndpoint::Livez);
        assert_eq!(args.url, "http://127.0.0.1:1");
        let cli = Cli::parse_from([
            "wxbroker",
            "probe",
            "--socket",
            "/run/wxbroker/wxbroker.sock",
        ]);
        let Command::Probe(args) = cli.command else {
            panic!("not probe")
        };
        assert_eq!(args.endpoint, ProbeEndpoint::Readyz);
        assert!(Cli::try_parse_from(["wxbroker", "probe", "--url", "x", "--socket", "y"]).is_err());
    }

    #[test]
    fn diagnostics_flags() {
        let cli = Cli::parse_from(["wxbroker", "quota", "--app", "shop", "--socket", "/s"]);
        let Command::Quota(args) = cli.command else {
            panic!("not quota")
        };
        assert_eq!(args.cgi_path, "/cgi-bin/token");
        assert!(
            Cli::try_parse_from(["wxbroker", "quota", "--app", "shop", "--cgi-path", "token"])
                .is_err()
        );
        let cli = Cli::parse_from(["wxbroker", "clear-quota", "--app", "shop"]);
        let Command::ClearQuota(args) = cli.command else {
            panic!("not clear-quota")
        };
        assert!(!args.confirm);
        let cli = Cli::parse_from(["wxbroker", "rid", "--app", "shop", "6172-0a"]);
        let Command::Rid(args) = cli.command else {
            panic!("not rid")
        };
        assert_eq!(args.rid, "6172-0a");
        assert!(Cli::try_parse_from(["wxbroker", "rid", "--app", "shop", "not a rid"]).is_err());
    }

    #[test]
    fn suites_parse() {
        let key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
        let base = format!("suite_id=ww1,secret=s,token=t,aes_key={key},provider_corpid=wwp");
        let plain = parse_suite(&base).unwrap();
        assert_eq!(plain.suite.suite_id, "ww1");
        assert!(!plain.suite.customized && plain.suite.provider_secret.is_none());
        assert_eq!(plain.ticket_every, Duration::from_secs(600));
        assert_eq!(plain.callback, None);
        let full = parse_suite(&format!(
            "{base},provider_secret=ps,customized=true,callback=http://127.0.0.1:8940/wechat/suites/crm/callback,ticket_every=30s,receive_id=provider_corpid"
        ))
        .unwrap();
        assert!(full.suite.customized);
        assert_eq!(full.suite.provider_secret.as_deref(), Some("ps"));
        assert_eq!(full.ticket_every, Duration::from_secs(30));
        assert_eq!(full.receive_id, crate::simulator::ReceiveId::ProviderCorpId);
        assert_eq!(
            full.callback.as_deref(),
            Some("http://127.0.0.1:8940/wechat/suites/crm/callback")
        );
        for bad in [
            "suite_id=ww1",
            &format!("{base},aes_key=short"),
            &base.replace(&format!("aes_key={key}"), "aes_key=short"),
            &format!("{base},nonsense=1"),
            &format!("{base},customized=yes"),
            &format!("{base},ticket_every=0s"),
            &format!("{base},receive_id=me"),
            "suite_id",
        ] {
            assert!(parse_suite(bad).is_err(), "{bad}");
        }
        let cli = Cli::parse_from(["wxbroker", "simulate", "--suite", &base, "--suite", &base]);
        let Command::Simulate(args) = cli.command else {
            panic!("not simulate")
        };
        assert_eq!(args.suites.len(), 2);
    }

    #[test]
    fn accounts_parse() {
        let account = parse_account("wx1:s3:wecom").unwrap();
        assert!(account.wecom);
        assert!(parse_account("wx1").is_err());
        assert!(parse_account("wx1:s:other").is_err());
    }
}
