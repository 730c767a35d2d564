//! `[log]`: the format, the level (a level name or filter directives) and
//! the audit file with its rotation size.

use crate::config::error::Problem;
use crate::config::fields::{choice, path};
use crate::config::raw::RawLog;
use crate::config::{LogConfig, LogFormat};

const DEFAULT_LOG_LEVEL: &str = "info";

/// The audit file's size before it is rotated: 64 MiB, some hundred
/// thousand calls.
const DEFAULT_AUDIT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// A bound below a few records would rotate on nearly every call.
const MIN_AUDIT_MAX_BYTES: u64 = 4096;

pub(super) fn log(raw: RawLog) -> Result<LogConfig, Problem> {
    let format = choice(
        "log.format",
        raw.format.as_deref(),
        LogFormat::Pretty,
        &[("pretty", LogFormat::Pretty), ("json", LogFormat::Json)],
    )?;
    let level = log_level("log.level", raw.level)?;
    let audit_file = path("log.audit_file", raw.audit_file)?;
    let audit_max_bytes = match raw.audit_max_bytes {
        None => DEFAULT_AUDIT_MAX_BYTES,
        Some(_) if audit_file.is_none() => {
            return Err(Problem::new(
                "log.audit_max_bytes",
                "applies only with log.audit_file; set it or remove this key",
            ))
        }
        Some(bytes) => u64::try_from(bytes)
            .ok()
            .filter(|bytes| *bytes >= MIN_AUDIT_MAX_BYTES)
            .ok_or_else(|| {
                Problem::new(
                    "log.audit_max_bytes",
                    format!("{bytes} is too small; at least {MIN_AUDIT_MAX_BYTES} bytes (the default is {DEFAULT_AUDIT_MAX_BYTES})"),
                )
            })?,
    };
    Ok(LogConfig {
        format,
        level,
        audit_file,
        audit_max_bytes,
    })
}

/// A level name, or an `EnvFilter` directive list such as
/// `info,wxbroker=debug`. EnvFilter alone would accept a typo like
/// `verbose` (as a target name), so a single word must be a level.
fn log_level(key: &str, value: Option<String>) -> Result<String, Problem> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let level = value.map_or_else(|| DEFAULT_LOG_LEVEL.to_owned(), |v| v.trim().to_owned());
    let single_word = !level.contains(['=', ',', '[']);
    if level.is_empty() || (single_word && !LEVELS.contains(&level.to_ascii_lowercase().as_str())) {
        return Err(Problem::new(
            key,
            format!(
                "\"{level}\" is not a level; use trace, debug, info, warn, error or off, \
                 or directives such as \"info,wxbroker=debug\""
            ),
        ));
    }
    tracing_subscriber::EnvFilter::try_new(&level)
        .map_err(|e| Problem::new(key, format!("\"{level}\" is not a valid filter: {e}")))?;
    Ok(level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_level_accepts_levels_and_directives() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "info,wxbroker=debug",
            "wxbroker=trace",
        ] {
            assert!(log_level("k", Some(ok.to_owned())).is_ok(), "{ok}");
        }
        for bad in ["verbose", "", "infoo", "info,wxbroker=loud"] {
            assert!(log_level("k", Some(bad.to_owned())).is_err(), "{bad}");
        }
        assert_eq!(log_level("k", None).as_deref(), Ok("info"));
    }
}
