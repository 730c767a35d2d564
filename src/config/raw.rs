//! The configuration file as written: serde structs mirroring the TOML,
//! every key optional so that defaults and "required" checks live in one
//! place (`validate`), unknown keys rejected by serde.
//!
//! Durations and `socket_mode` are kept as raw TOML values rather than
//! strings: validation then reports a wrong type (`refresh_before = 300`)
//! with the key's full path and a hint, instead of toml's generic
//! "invalid type".

use serde::{Deserialize, Deserializer};

use crate::secret::Secret;

/// A TOML value checked later by `validate` (durations, `socket_mode`).
pub(crate) type Loose = toml::Value;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub server: Option<RawServer>,
    pub store: Option<RawStore>,
    pub log: Option<RawLog>,
    pub upstream: Option<RawUpstream>,
    pub apps: Option<Vec<RawApp>>,
    pub platforms: Option<Vec<RawPlatform>>,
    pub suites: Option<Vec<RawSuite>>,
    pub clients: Option<Vec<RawClient>>,
}

/// `[[clients]]`: who may read which apps and platforms, on the remote
/// listener (a bearer credential) or on the Unix socket (a uid or gid).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClient {
    pub name: Option<String>,
    pub credential_sha256: Option<String>,
    pub uid: Option<i64>,
    pub gid: Option<i64>,
    pub apps: Option<Vec<String>>,
    pub platforms: Option<Vec<String>>,
    pub suites: Option<Vec<String>>,
    pub apis: Option<Vec<String>>,
    pub admin: Option<bool>,
}

/// `[upstream]`: how the broker reaches WeChat.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub resolve: Option<String>,
    pub connect_to: Option<std::collections::BTreeMap<String, String>>,
}

/// `[server.compat_tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub listen: Option<String>,
    pub unix_socket: Option<String>,
    pub socket_mode: Option<Loose>,
    pub socket_group: Option<String>,
    pub require_client_header: Option<bool>,
    pub max_connections: Option<i64>,
    pub metrics_listen: Option<String>,
    pub wechat_compat_listen: Option<String>,
    pub token_wait_timeout: Option<Loose>,
    pub idle_timeout: Option<Loose>,
    pub compat_tls: Option<RawTls>,
    pub body_timeout: Option<Loose>,
    pub write_timeout: Option<Loose>,
    pub remote_listen: Option<String>,
    pub remote_tls: Option<RawTls>,
    pub remote_max_connections: Option<i64>,
    pub remote_max_watches_per_client: Option<i64>,
    pub callback_listen: Option<String>,
    pub request_threads: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    pub backend: Option<String>,
    pub path: Option<String>,
    pub url: Option<String>,
    pub key_prefix: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
    pub audit_file: Option<String>,
    pub audit_max_bytes: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApp {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub grant: Option<String>,
    pub appid: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    pub secret: Option<InlineSecret>,
    pub refresh_before: Option<Loose>,
    pub daily_budget: Option<i64>,
    pub min_forced_interval: Option<Loose>,
    pub api_base: Option<String>,
    pub fetch_timeout: Option<Loose>,
    pub sink: Option<RawSink>,
    pub compat_listen: Option<String>,
    pub tickets: Option<Vec<String>>,
    pub agentid: Option<i64>,
    pub ticket_budget: Option<std::collections::BTreeMap<String, i64>>,
    pub follow: Option<String>,
    pub follow_credential_file: Option<String>,
    pub follow_ca_file: Option<String>,
}

/// `[[platforms]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlatform {
    pub name: Option<String>,
    pub component_appid: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    pub secret: Option<InlineSecret>,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
    pub token: Option<InlineSecret>,
    pub aes_key_env: Option<String>,
    pub aes_key_file: Option<String>,
    pub aes_key: Option<InlineSecret>,
    pub refresh_before: Option<Loose>,
    pub daily_budget: Option<i64>,
    pub min_forced_interval: Option<Loose>,
    pub authorizer_daily_budget: Option<i64>,
    pub api_base: Option<String>,
    pub fetch_timeout: Option<Loose>,
}

/// `[[suites]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSuite {
    pub name: Option<String>,
    pub suite_id: Option<String>,
    pub provider_corpid: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    pub secret: Option<InlineSecret>,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
    pub token: Option<InlineSecret>,
    pub aes_key_env: Option<String>,
    pub aes_key_file: Option<String>,
    pub aes_key: Option<InlineSecret>,
    pub provider_secret_env: Option<String>,
    pub provider_secret_file: Option<String>,
    pub provider_secret: Option<InlineSecret>,
    pub customized: Option<bool>,
    pub corp_tickets: Option<Vec<String>>,
    pub refresh_before: Option<Loose>,
    pub daily_budget: Option<i64>,
    pub api_base: Option<String>,
    pub fetch_timeout: Option<Loose>,
}

/// `sink = { path = "...", format = "json", mode = "0600" }`: a file the
/// current token is written to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSink {
    pub path: Option<String>,
    pub format: Option<String>,
    pub mode: Option<Loose>,
}

/// An inline `secret = "..."`. Wrapped in [`Secret`] from the moment it is
/// parsed so that `Debug` of the raw structs is already masked.
#[derive(Debug)]
pub(crate) struct InlineSecret(pub Secret);

impl<'de> Deserialize<'de> for InlineSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Serde's stock "invalid type: integer `123`, expected a string" would
        // echo the value; a secret typed without quotes must not be echoed.
        match toml::Value::deserialize(deserializer)? {
            toml::Value::String(value) => Ok(InlineSecret(Secret::new(value))),
            _ => Err(serde::de::Error::custom(
                "`secret` must be a quoted string (its value is not shown)",
            )),
        }
    }
}

impl RawConfig {
    pub fn parse(text: &str) -> Result<RawConfig, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_is_an_empty_config() {
        let raw = RawConfig::parse("").unwrap();
        assert!(raw.server.is_none() && raw.apps.is_none());
    }

    #[test]
    fn unknown_keys_are_rejected_in_every_table() {
        for text in [
            "bogus = 1",
            "[server]\nbogus = 1",
            "[store]\nbogus = 1",
            "[log]\nbogus = 1",
            "[[apps]]\nbogus = 1",
            "[[apps]]\nsink = { bogus = 1 }",
        ] {
            let err = RawConfig::parse(text).unwrap_err();
            assert!(err.message().contains("bogus"), "{text}: {err}");
        }
    }

    #[test]
    fn a_non_string_inline_secret_is_not_echoed() {
        let err = RawConfig::parse("[[apps]]\nsecret = 987654321\n").unwrap_err();
        assert!(!err.message().contains("987654321"), "{}", err.message());
    }

    #[test]
    fn raw_debug_masks_the_inline_secret() {
        let raw = RawConfig::parse("[[apps]]\nsecret = \"hunter2-secret\"\n").unwrap();
        assert!(!format!("{raw:?}").contains("hunter2"));
    }
}
