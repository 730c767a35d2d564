//! `Config::from_toml_str_with_env` on arbitrary UTF-8.
//!
//! Properties:
//! - it never panics (errors are fine);
//! - an inline `secret = "X"` (X: at least 8 printable ASCII characters, no
//!   escapes, written once in the input) never shows up in the error's
//!   Display or Debug. To tell a leak from X merely being a word of some
//!   fixed message, the input is parsed a second time with X replaced by a
//!   canary of the same length: X counts as leaked only if it is gone from
//!   that second message, and the canary must never appear in it, nor in the
//!   effective settings, warnings or `Debug` of an accepted configuration;
//! - the value every `secret_env` resolves to ("secret-value") is never
//!   shown either, unless the input itself spells it somewhere.
//!
//! Inputs that use `secret_file` are skipped: that key opens whatever path
//! it names, and a FIFO or `/dev/stdin` would stall the fuzzer. Reading
//! secret files is covered by the unit and integration tests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxbroker::config::{Config, ConfigError};

const SOURCE: &str = "fuzz.toml";
const ENV_SECRET: &str = "secret-value";
const CANARY: &[u8] = b"Qz8Wk3JvR5";

fn env(_: &str) -> Option<String> {
    Some(ENV_SECRET.into())
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str_with_env(SOURCE, text, &env)
}

/// Everything a user could see of the outcome.
fn shown(result: &Result<Config, ConfigError>) -> String {
    match result {
        Err(err) => format!("{err}\n{err:?}"),
        Ok(config) => format!(
            "{}\n{}\n{config:?}",
            config.render_effective(),
            config.warnings().join("\n")
        ),
    }
}

fuzz_target!(|text: &str| {
    let doc = text.parse::<toml::Table>().ok().map(toml::Value::Table);
    if doc
        .as_ref()
        .is_some_and(|doc| any_string(doc, &mut |s| s == "secret_file"))
    {
        return;
    }

    let result = parse(text);
    let out = shown(&result);

    // The resolved `secret_env` value.
    let spelled = text.contains(ENV_SECRET)
        || doc
            .as_ref()
            .is_some_and(|doc| any_string(doc, &mut |s| s.contains(ENV_SECRET)));
    if !spelled {
        assert!(
            !out.contains(ENV_SECRET),
            "the secret_env value is shown:\n{out}"
        );
    }

    // The inline secret.
    let Some((start, end)) = inline_secret(text) else {
        return;
    };
    let secret = &text[start..end];
    if text.matches(secret).count() != 1 {
        return;
    }
    if let Some(doc) = &doc {
        // The text parses: make sure the match really is an app's secret
        // and not, say, a line inside a multi-line string.
        if !is_app_secret(doc, secret) {
            return;
        }
    }
    let canary: String = CANARY
        .iter()
        .cycle()
        .take(secret.len())
        .map(|&b| b as char)
        .collect();
    let replaced = format!("{}{}{}", &text[..start], canary, &text[end..]);
    if replaced.matches(&canary).count() != 1 {
        return;
    }
    let out2 = shown(&parse(&replaced));
    assert!(
        !out2.contains(&canary),
        "the inline secret is shown:\n{out2}"
    );
    if result.is_err() {
        assert!(
            !out.contains(secret) || out2.contains(secret),
            "the inline secret {secret:?} is shown:\n{out}"
        );
    }
});

/// The byte range of X in the first line of the form `secret = "X"` or
/// `secret = 'X'` (optional spaces, a table's indentation) where X is at
/// least 8 printable ASCII characters without quotes or backslashes.
fn inline_secret(text: &str) -> Option<(usize, usize)> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let here = offset;
        offset += line.len();
        let rest = line.trim_start_matches([' ', '\t']);
        let Some(rest) = rest.strip_prefix("secret") else {
            continue;
        };
        let rest = rest.trim_start_matches([' ', '\t']);
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        let rest = rest.trim_start_matches([' ', '\t']);
        let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let value = &rest[1..];
        let Some(len) = value.find(quote) else {
            continue;
        };
        let value = &value[..len];
        if value.len() < 8
            || !value
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\'' && b != b'\\')
        {
            continue;
        }
        let start = here + (line.len() - rest.len()) + 1;
        return Some((start, start + value.len()));
    }
    None
}

fn is_app_secret(doc: &toml::Value, secret: &str) -> bool {
    let Some(toml::Value::Array(apps)) = doc.get("apps") else {
        return false;
    };
    apps.iter().any(|app| {
        app.get("secret")
            .and_then(toml::Value::as_str)
            .is_some_and(|s| s == secret)
    })
}

/// Whether any key or string value in `value` satisfies `pred`.
fn any_string(value: &toml::Value, pred: &mut dyn FnMut(&str) -> bool) -> bool {
    match value {
        toml::Value::String(s) => pred(s),
        toml::Value::Array(items) => items.iter().any(|v| any_string(v, pred)),
        toml::Value::Table(table) => table.iter().any(|(k, v)| pred(k) || any_string(v, pred)),
        _ => false,
    }
}
