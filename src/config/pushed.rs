//! What every owner of pushed credentials configures alike: an Open
//! Platform (`[[platforms]]`) and a WeCom suite (`[[suites]]`) each hold a
//! secret, the callback token and EncodingAESKey that sign and encrypt
//! the pushes, and the settings of the token fetched with the pushed
//! ticket. One reading of them, so both kinds name their keys and refuse
//! their mistakes the same way.

use std::time::Duration;

use super::error::Problem;
use super::fields::{self, Env, TOKEN_LIFETIME};
use super::raw::{InlineSecret, Loose};
use super::secrets::secret_of;
use super::SecretSource;
use crate::secret::Secret;

/// The length of an EncodingAESKey: 32 bytes in base64 without its `=`.
pub const AES_KEY_LEN: usize = 43;
const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// WeChat and WeCom both allow 2000 calls a day of the token endpoint.
const DEFAULT_DAILY_BUDGET: u32 = 2000;
const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// One secret as written: exactly one of `*_env`, `*_file` or the inline
/// key.
pub(super) struct RawSecret {
    pub env: Option<String>,
    pub file: Option<String>,
    pub inline: Option<InlineSecret>,
}

impl RawSecret {
    pub fn is_absent(&self) -> bool {
        self.env.is_none() && self.file.is_none() && self.inline.is_none()
    }
}

/// The three secrets of a pushed family, read and checked.
pub(super) struct CallbackSecrets {
    pub secret: (Secret, SecretSource),
    pub token: (Secret, SecretSource),
    pub aes_key: (Secret, SecretSource),
}

/// Reads `secret`, `token` and `aes_key` of the table `table`; the
/// EncodingAESKey must have its one possible shape.
pub(super) fn callback_secrets(
    table: &str,
    secret: RawSecret,
    token: RawSecret,
    aes_key: RawSecret,
    env: Env<'_>,
) -> Result<CallbackSecrets, Problem> {
    let secrets = CallbackSecrets {
        secret: read_secret(table, "secret", secret, env)?,
        token: read_secret(table, "token", token, env)?,
        aes_key: read_secret(table, "aes_key", aes_key, env)?,
    };
    let (aes_key, source) = &secrets.aes_key;
    check_aes_key(&source_key(table, "aes_key", source), aes_key.expose())?;
    Ok(secrets)
}

/// One secret of the table `table`, named `field`.
pub(super) fn read_secret(
    table: &str,
    field: &str,
    raw: RawSecret,
    env: Env<'_>,
) -> Result<(Secret, SecretSource), Problem> {
    secret_of(table, field, raw.env, raw.file, raw.inline, env)
}

/// The key a secret's value came from, for a message about the value.
fn source_key(table: &str, field: &str, source: &SecretSource) -> String {
    match source {
        SecretSource::Env(_) => format!("{table}.{field}_env"),
        SecretSource::File(_) => format!("{table}.{field}_file"),
        // A pushed family's secrets never come from a leader.
        SecretSource::Inline | SecretSource::Leader => format!("{table}.{field}"),
    }
}

/// An EncodingAESKey is exactly 43 characters of the standard base64
/// alphabet; the value itself is never quoted back.
pub(super) fn check_aes_key(key: &str, value: &str) -> Result<(), Problem> {
    let alphabet = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if value.len() != AES_KEY_LEN || !alphabet {
        return Err(Problem::new(
            key,
            format!(
                "the EncodingAESKey must be exactly {AES_KEY_LEN} characters of A-Z, a-z, 0-9, + \
                 and / (it is {} characters; the value is not shown)",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// The settings of the token fetched with the pushed ticket, as written.
pub(super) struct RawRefreshing {
    pub refresh_before: Option<Loose>,
    pub daily_budget: Option<i64>,
    pub api_base: Option<String>,
    pub fetch_timeout: Option<Loose>,
}

/// The settings of the token fetched with the pushed ticket.
pub(super) struct Refreshing {
    pub refresh_before: Duration,
    pub daily_budget: u32,
    /// Without a trailing slash.
    pub api_base: String,
    pub fetch_timeout: Duration,
}

/// Reads the refresh settings of the table `table`, whose API lives at
/// `default_api_base` unless it says otherwise.
pub(super) fn refreshing(
    table: &str,
    raw: RawRefreshing,
    default_api_base: &str,
) -> Result<Refreshing, Problem> {
    let key = |field: &str| format!("{table}.{field}");
    let refresh_before = fields::duration(
        &key("refresh_before"),
        raw.refresh_before.as_ref(),
        DEFAULT_REFRESH_BEFORE,
    )?;
    fields::positive(&key("refresh_before"), refresh_before)?;
    if refresh_before >= TOKEN_LIFETIME {
        return Err(Problem::new(
            key("refresh_before"),
            format!(
                "must be shorter than the token lifetime ({})",
                humantime::format_duration(TOKEN_LIFETIME)
            ),
        ));
    }
    let daily_budget =
        fields::at_least_one(&key("daily_budget"), raw.daily_budget, DEFAULT_DAILY_BUDGET)?;
    let api_base = fields::api_base(&key("api_base"), raw.api_base, default_api_base)?;
    let fetch_timeout = fields::duration(
        &key("fetch_timeout"),
        raw.fetch_timeout.as_ref(),
        DEFAULT_FETCH_TIMEOUT,
    )?;
    fields::positive(&key("fetch_timeout"), fetch_timeout)?;
    fields::at_most(&key("fetch_timeout"), fetch_timeout, MAX_FETCH_TIMEOUT)?;
    Ok(Refreshing {
        refresh_before,
        daily_budget,
        api_base,
        fetch_timeout,
    })
}
