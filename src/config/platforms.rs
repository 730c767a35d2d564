//! `[[platforms]]` (DESIGN.md section 13): the WeChat Open Platform
//! component apps the broker owns, each with its component secret, the
//! message token and EncodingAESKey that sign and encrypt WeChat's pushes,
//! and `[server] callback_listen`, where those pushes arrive.
//!
//! The three secrets follow the app secret's rules: exactly one of
//! `*_env`, `*_file` or the inline key, never shown in a message or in
//! `check-config` (`***`).

use std::time::Duration;

use super::error::Problem;
use super::fields::{self, Env, WECHAT_API_BASE};
use super::pushed::{self, RawRefreshing, RawSecret, Refreshing};
use super::raw::RawPlatform;
use super::SecretSource;
use crate::secret::Secret;

/// One validated platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformConfig {
    /// `[a-z0-9_-]{1,32}`: in URLs, metric labels and store keys.
    pub name: String,
    pub component_appid: String,
    pub secret: Secret,
    pub secret_source: SecretSource,
    /// The message verification token WeChat signs pushes with.
    pub token: Secret,
    pub token_source: SecretSource,
    /// The EncodingAESKey: 43 characters of the base64 alphabet.
    pub aes_key: Secret,
    pub aes_key_source: SecretSource,
    /// Refresh the component token and each authorizer token this long
    /// before expiry.
    pub refresh_before: Duration,
    /// Component token fetches a Beijing day.
    pub daily_budget: u32,
    /// The shortest time between two component token refreshes forced by
    /// a rejection (the app's rule 4).
    pub min_forced_interval: Duration,
    /// Authorizer token fetches (`api_authorizer_token`) a Beijing day,
    /// all authorizers together; in a fleet, the fleet's.
    pub authorizer_daily_budget: u32,
    /// Without a trailing slash.
    pub api_base: String,
    pub fetch_timeout: Duration,
}

const DEFAULT_MIN_FORCED_INTERVAL: Duration = Duration::from_secs(30);
/// Ten thousand authorizers refreshed every hour and a half take 160,000
/// fetches a day; this leaves room for retries and reported tokens.
pub const DEFAULT_AUTHORIZER_DAILY_BUDGET: u32 = 200_000;
pub use super::pushed::AES_KEY_LEN;

pub(super) fn platforms(
    raw: Vec<RawPlatform>,
    env: Env<'_>,
) -> Result<Vec<PlatformConfig>, Problem> {
    let mut platforms: Vec<PlatformConfig> = Vec::with_capacity(raw.len());
    for (index, raw) in raw.into_iter().enumerate() {
        let platform = platform(index, raw, env)?;
        if let Some(twin) = platforms.iter().find(|p| p.name == platform.name) {
            return Err(Problem::new(
                format!("platforms[{index}].name"),
                format!("\"{}\" is already the name of a platform", twin.name),
            ));
        }
        if let Some(twin) = platforms
            .iter()
            .find(|p| p.component_appid == platform.component_appid)
        {
            return Err(Problem::new(
                format!("platforms.{}.component_appid", platform.name),
                format!(
                    "platform \"{}\" already uses this component appid; the two would fetch \
                     competing component tokens",
                    twin.name
                ),
            ));
        }
        platforms.push(platform);
    }
    Ok(platforms)
}

/// Platforms need a listener for WeChat's pushes, and the listener needs
/// a platform (or a suite): without pushes no component token can ever be
/// fetched.
pub(super) fn callback_listener(
    server: &super::ServerConfig,
    platforms: &[PlatformConfig],
    any_suite: bool,
) -> Result<(), Problem> {
    match (
        server.callback_listen.is_some(),
        platforms.is_empty(),
        any_suite,
    ) {
        (false, false, _) => Err(Problem::new(
            "server.callback_listen",
            "required with [[platforms]]: WeChat pushes the component_verify_ticket there",
        )),
        (true, true, false) => Err(Problem::new(
            "server.callback_listen",
            "applies only with [[platforms]] or [[suites]]",
        )),
        _ => Ok(()),
    }
}

fn platform(index: usize, raw: RawPlatform, env: Env<'_>) -> Result<PlatformConfig, Problem> {
    let name = fields::table_name("platforms", index, raw.name)?;
    let table = format!("platforms.{name}");
    let key = |field: &str| format!("{table}.{field}");
    let component_appid = raw
        .component_appid
        .ok_or_else(|| Problem::new(key("component_appid"), "required"))?;
    if component_appid.is_empty() || !component_appid.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::new(
            key("component_appid"),
            "must be non-empty printable ASCII without spaces",
        ));
    }
    let secrets = pushed::callback_secrets(
        &table,
        RawSecret {
            env: raw.secret_env,
            file: raw.secret_file,
            inline: raw.secret,
        },
        RawSecret {
            env: raw.token_env,
            file: raw.token_file,
            inline: raw.token,
        },
        RawSecret {
            env: raw.aes_key_env,
            file: raw.aes_key_file,
            inline: raw.aes_key,
        },
        env,
    )?;
    let (secret, secret_source) = secrets.secret;
    let (token, token_source) = secrets.token;
    let (aes_key, aes_key_source) = secrets.aes_key;
    let Refreshing {
        refresh_before,
        daily_budget,
        api_base,
        fetch_timeout,
    } = pushed::refreshing(
        &table,
        RawRefreshing {
            refresh_before: raw.refresh_before,
            daily_budget: raw.daily_budget,
            api_base: raw.api_base,
            fetch_timeout: raw.fetch_timeout,
        },
        WECHAT_API_BASE,
    )?;
    let min_forced_interval = fields::duration(
        &key("min_forced_interval"),
        raw.min_forced_interval.as_ref(),
        DEFAULT_MIN_FORCED_INTERVAL,
    )?;
    let authorizer_daily_budget = fields::at_least_one(
        &key("authorizer_daily_budget"),
        raw.authorizer_daily_budget,
        DEFAULT_AUTHORIZER_DAILY_BUDGET,
    )?;
    Ok(PlatformConfig {
        name,
        component_appid,
        secret,
        secret_source,
        token,
        token_source,
        aes_key,
        aes_key_source,
        refresh_before,
        daily_budget,
        min_forced_interval,
        authorizer_daily_budget,
        api_base,
        fetch_timeout,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    fn config(platform: &str) -> Result<Config, String> {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ncallback_listen = \"127.0.0.1:0\"\n[[platforms]]\n{platform}"
        );
        let env = |name: &str| match name {
            "SAAS_SECRET" => Some("component-secret-value".to_owned()),
            "SAAS_TOKEN" => Some("message-token-value".to_owned()),
            "SAAS_AES" => Some(KEY.to_owned()),
            _ => None,
        };
        Config::from_toml_str_with_env("t.toml", &text, &env).map_err(|e| e.to_string())
    }

    #[test]
    fn a_platform_from_env_and_inline_secrets() {
        let config = config(
            "name = \"saas\"\ncomponent_appid = \"wxcomponent01\"\nsecret_env = \"SAAS_SECRET\"\ntoken_env = \"SAAS_TOKEN\"\naes_key_env = \"SAAS_AES\"\n",
        )
        .unwrap();
        let platform = &config.platforms[0];
        assert_eq!(platform.aes_key.expose(), KEY);
        assert_eq!(platform.daily_budget, 2000);
        assert_eq!(platform.min_forced_interval, Duration::from_secs(30));
        assert_eq!(platform.authorizer_daily_budget, 200_000);
        assert!(
            config.apps.is_empty(),
            "a platform alone is a configuration"
        );
        let shown = config.render_effective();
        assert!(shown.contains("aes_key_env = \"SAAS_AES\""), "{shown}");
        assert!(
            shown.contains("authorizer_daily_budget = 200000"),
            "{shown}"
        );
        let inline = self::config(&format!(
            "name = \"saas\"\ncomponent_appid = \"wxc\"\nsecret = \"s-inline-9\"\ntoken = \"t-inline-9\"\naes_key = \"{KEY}\"\n"
        ))
        .unwrap();
        let shown = inline.render_effective();
        for secret in ["s-inline-9", "t-inline-9", KEY] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(!format!("{inline:?}").contains(secret));
        }
        assert!(shown.contains("aes_key = \"***\""), "{shown}");
    }

    #[test]
    fn a_platform_sets_its_own_min_forced_interval() {
        let config = config(
            "name = \"saas\"\ncomponent_appid = \"wxc\"\nsecret = \"s\"\ntoken = \"t\"\naes_key_env = \"SAAS_AES\"\nmin_forced_interval = \"5s\"\n",
        )
        .unwrap();
        assert_eq!(
            config.platforms[0].min_forced_interval,
            Duration::from_secs(5)
        );
        assert!(config
            .render_effective()
            .contains("min_forced_interval = \"5s\""));
        let err = self::config(
            "name = \"saas\"\ncomponent_appid = \"wxc\"\nsecret = \"s\"\ntoken = \"t\"\naes_key_env = \"SAAS_AES\"\nmin_forced_interval = \"soon\"\n",
        )
        .unwrap_err();
        assert!(err.contains("platforms.saas.min_forced_interval"), "{err}");
    }

    #[test]
    fn errors_name_the_key_and_never_the_secret() {
        let bad_key = "x".repeat(42);
        let err = config(&format!(
            "name = \"saas\"\ncomponent_appid = \"wxc\"\nsecret = \"s\"\ntoken = \"t\"\naes_key = \"{bad_key}\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("platforms.saas.aes_key:"), "{err}");
        assert!(!err.contains(&bad_key), "{err}");
        let err = config(
            "name = \"saas\"\ncomponent_appid = \"wxc\"\nsecret = \"s\"\naes_key_env = \"SAAS_AES\"\n",
        )
        .unwrap_err();
        assert!(
            err.contains("platforms.saas:") && err.contains("token_env"),
            "{err}"
        );
        for bad in ["0", "-5", "5000000000"] {
            let err = config(&format!(
                "name = \"saas\"\ncomponent_appid = \"wxc\"\nsecret = \"s\"\ntoken = \"t\"\naes_key = \"{KEY}\"\nauthorizer_daily_budget = {bad}\n"
            ))
            .unwrap_err();
            assert!(
                err.contains("platforms.saas.authorizer_daily_budget: must be at least 1"),
                "{err}"
            );
        }
        let set = config(&format!(
            "name = \"saas\"\ncomponent_appid = \"wxc\"\nsecret = \"s\"\ntoken = \"t\"\naes_key = \"{KEY}\"\nauthorizer_daily_budget = 50000\n"
        ))
        .unwrap();
        assert_eq!(set.platforms[0].authorizer_daily_budget, 50_000);
        assert!(set
            .render_effective()
            .contains("authorizer_daily_budget = 50000"));
        let err = config("name = \"Bad Name\"\n").unwrap_err();
        assert!(err.contains("platforms[0].name"), "{err}");
        let err = config(
            "name = \"saas\"\ncomponent_appid = \"wxc\"\nsecret = \"s\"\ntoken = \"t\"\naes_key = \"a+b/\"\n",
        )
        .unwrap_err();
        assert!(err.contains("43 characters"), "{err}");
    }
}
