//! `[[suites]]` (DESIGN.md section 19): the WeCom service provider's
//! apps (第三方应用, and 代开发 templates with `customized = true`), each
//! with its suite secret, the callback token and EncodingAESKey that sign
//! and encrypt WeCom's pushes, the provider's corpid (the other receive id
//! WeCom seals pushes for) and, optionally, the provider secret that
//! enables the `provider_access_token`. Pushes arrive on
//! `[server] callback_listen`.
//!
//! The four secrets follow the app secret's rules: exactly one of
//! `*_env`, `*_file` or the inline key (the provider secret may be left
//! out), never shown in a message or in `check-config` (`***`).

use std::time::Duration;

use super::error::Problem;
use super::fields::{self, Env, WECOM_API_BASE};
use super::pushed::{self, RawRefreshing, RawSecret, Refreshing};
use super::raw::RawSuite;
use super::SecretSource;
use crate::credential::TicketKind;
use crate::secret::Secret;

/// One validated suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuiteConfig {
    /// `[a-z0-9_-]{1,32}`: in URLs, metric labels and store keys.
    pub name: String,
    /// The app template's SuiteID (`ww…`, or `dk…` for a 代开发 template).
    pub suite_id: String,
    /// The service provider's own corpid: WeCom seals some pushes for it
    /// instead of the suite id, and it fetches the provider token.
    pub provider_corpid: String,
    /// The suite_secret.
    pub secret: Secret,
    pub secret_source: SecretSource,
    /// The callback Token WeCom signs pushes with.
    pub token: Secret,
    pub token_source: SecretSource,
    /// The callback EncodingAESKey: 43 characters of the base64 alphabet.
    pub aes_key: Secret,
    pub aes_key_source: SecretSource,
    /// The provider secret, which enables the `provider_access_token`.
    pub provider_secret: Option<(Secret, SecretSource)>,
    /// A 代开发 template: an install's permanent code is the corp app's
    /// secret, and its token comes from `gettoken`.
    pub customized: bool,
    /// The JS-SDK tickets the broker owns for every installed corp
    /// (`jsapi`, `agent_config`), in configuration order.
    pub corp_tickets: Vec<TicketKind>,
    /// Refresh the suite, provider and corp tokens this long before expiry.
    pub refresh_before: Duration,
    /// Suite token fetches a Beijing day.
    pub daily_budget: u32,
    /// Without a trailing slash.
    pub api_base: String,
    pub fetch_timeout: Duration,
}

/// The tickets a WeCom corp has.
const CORP_TICKETS: [TicketKind; 2] = [TicketKind::Jsapi, TicketKind::AgentConfig];

pub(super) fn suites(raw: Vec<RawSuite>, env: Env<'_>) -> Result<Vec<SuiteConfig>, Problem> {
    let mut suites: Vec<SuiteConfig> = Vec::with_capacity(raw.len());
    for (index, raw) in raw.into_iter().enumerate() {
        let suite = suite(index, raw, env)?;
        if let Some(twin) = suites.iter().find(|s| s.name == suite.name) {
            return Err(Problem::new(
                format!("suites[{index}].name"),
                format!("\"{}\" is already the name of a suite", twin.name),
            ));
        }
        if let Some(twin) = suites.iter().find(|s| s.suite_id == suite.suite_id) {
            return Err(Problem::new(
                format!("suites.{}.suite_id", suite.name),
                format!(
                    "suite \"{}\" already uses this suite_id; WeCom pushes its tickets to one \
                     callback URL, so only one entry would ever receive them",
                    twin.name
                ),
            ));
        }
        suites.push(suite);
    }
    Ok(suites)
}

fn suite(index: usize, raw: RawSuite, env: Env<'_>) -> Result<SuiteConfig, Problem> {
    let name = fields::table_name("suites", index, raw.name)?;
    let table = format!("suites.{name}");
    let key = |field: &str| format!("{table}.{field}");
    let suite_id = identifier(&key("suite_id"), raw.suite_id)?;
    let provider_corpid = identifier(&key("provider_corpid"), raw.provider_corpid)?;
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
    let provider_secret = RawSecret {
        env: raw.provider_secret_env,
        file: raw.provider_secret_file,
        inline: raw.provider_secret,
    };
    let provider_secret = if provider_secret.is_absent() {
        None
    } else {
        Some(pushed::read_secret(
            &table,
            "provider_secret",
            provider_secret,
            env,
        )?)
    };
    let corp_tickets = corp_tickets(&key("corp_tickets"), raw.corp_tickets)?;
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
        WECOM_API_BASE,
    )?;
    Ok(SuiteConfig {
        name,
        suite_id,
        provider_corpid,
        secret,
        secret_source,
        token,
        token_source,
        aes_key,
        aes_key_source,
        provider_secret,
        customized: raw.customized.unwrap_or(false),
        corp_tickets,
        refresh_before,
        daily_budget,
        api_base,
        fetch_timeout,
    })
}

/// A suite id or corpid: in URLs WeCom is called with and in the receive
/// id check, so printable ASCII without spaces.
fn identifier(key: &str, value: Option<String>) -> Result<String, Problem> {
    let value = value.ok_or_else(|| Problem::new(key, "required"))?;
    if value.is_empty() || value.len() > 64 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::new(
            key,
            "must be 1 to 64 characters of printable ASCII without spaces",
        ));
    }
    Ok(value)
}

fn corp_tickets(key: &str, names: Option<Vec<String>>) -> Result<Vec<TicketKind>, Problem> {
    let mut kinds = Vec::new();
    for (index, name) in names.unwrap_or_default().into_iter().enumerate() {
        let item = format!("{key}[{index}]");
        let kind = TicketKind::from_name(&name)
            .filter(|kind| CORP_TICKETS.contains(kind))
            .ok_or_else(|| {
                Problem::new(
                    &item,
                    format!(
                        "\"{name}\" is not a ticket a WeCom corp has; choose from \"jsapi\", \
                         \"agent_config\""
                    ),
                )
            })?;
        if kinds.contains(&kind) {
            return Err(Problem::new(item, format!("\"{name}\" is listed twice")));
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

/// Suites need a listener for WeCom's pushes: without the suite_ticket no
/// suite token can ever be fetched.
pub(super) fn callback_listener(
    server: &super::ServerConfig,
    suites: &[SuiteConfig],
) -> Result<(), Problem> {
    if server.callback_listen.is_none() && !suites.is_empty() {
        return Err(Problem::new(
            "server.callback_listen",
            "required with [[suites]]: WeCom pushes the suite_ticket there",
        ));
    }
    Ok(())
}

/// Inline secrets and plain http, as for apps.
pub(super) fn warnings(suites: &[SuiteConfig], warn: &mut dyn FnMut(&str, String)) {
    for suite in suites {
        let table = format!("suites.{}", suite.name);
        let sources = [
            ("secret", Some(&suite.secret_source)),
            ("token", Some(&suite.token_source)),
            ("aes_key", Some(&suite.aes_key_source)),
            (
                "provider_secret",
                suite.provider_secret.as_ref().map(|(_, source)| source),
            ),
        ];
        for (field, source) in sources {
            if source == Some(&SecretSource::Inline) {
                warn(
                    &format!("{table}.{field}"),
                    format!(
                        "the {field} is written in the configuration file; prefer {field}_env \
                         or {field}_file"
                    ),
                );
            }
        }
        if suite.api_base.starts_with("http://") && !super::urls::is_local_host(&suite.api_base) {
            warn(
                &format!("{table}.api_base"),
                "plain http to a non-local host sends the suite secret unencrypted; use https"
                    .to_owned(),
            );
        }
    }
}
