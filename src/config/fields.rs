//! One reading of each key type the configuration uses: durations,
//! counts, addresses, paths, names, words, modes, fixed choices and API
//! base URLs. Every section validator builds on these, so a rule (and its
//! message, which names the key) is written once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use humantime::format_duration;

use super::error::Problem;
use super::raw::Loose;
use super::urls;

/// Looks up an environment variable; injectable so tests need not touch the
/// process environment.
pub(super) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// WeChat and WeCom both issue tokens for 7200 s.
pub(super) const TOKEN_LIFETIME: Duration = Duration::from_secs(7200);

/// Where WeChat's and WeCom's APIs live unless `api_base` says otherwise.
pub(super) const WECHAT_API_BASE: &str = "https://api.weixin.qq.com";

pub(super) const WECOM_API_BASE: &str = "https://qyapi.weixin.qq.com";

/// `http(s)://host[:port][/prefix]`, returned without trailing slashes so
/// callers can append `/cgi-bin/...`. No userinfo: WeChat never asks for
/// one, and a `user:password@` written here would travel with every call
/// and hide the real host (`http://localhost:x@example.com` is
/// `example.com`). Messages show the value with any userinfo masked.
pub(super) fn api_base(key: &str, value: Option<String>, default: &str) -> Result<String, Problem> {
    let Some(value) = value else {
        return Ok(default.to_owned());
    };
    let shown = urls::masked(&value);
    let base = value.trim().trim_end_matches('/');
    let rest = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"))
        .ok_or_else(|| {
            Problem::new(
                key,
                format!("\"{shown}\" must start with https:// (or http:// for a local simulator)"),
            )
        })?;
    if rest.split('/').next().unwrap_or("").is_empty() {
        return Err(Problem::new(key, format!("\"{shown}\" names no host")));
    }
    if base.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
        return Err(Problem::new(
            key,
            format!("\"{shown}\" must be a plain base URL, without spaces, query or fragment"),
        ));
    }
    // Any '@', not only the one the URL parser would take for the end of
    // a userinfo: the parser ends the authority at the first '/', so
    // `https://user:pa/ss@host` parses as a path, yet was meant as a
    // password. No WeChat path holds an '@'.
    if base.contains('@') {
        return Err(Problem::new(
            key,
            format!(
                "\"{shown}\" must not hold a user name or password (\"user:password@\"); \
                 WeChat never needs one"
            ),
        ));
    }
    // The parse reqwest will do on every call, done once here.
    url::Url::parse(base)
        .map_err(|e| Problem::new(key, format!("\"{shown}\" is not a valid URL ({e})")))?;
    Ok(base.to_owned())
}

/// The `name` of the `index`th entry of an array of tables (`apps`,
/// `platforms`). Names appear in URLs, metric labels and store keys, hence
/// the strict set.
pub(super) fn table_name(
    table: &str,
    index: usize,
    name: Option<String>,
) -> Result<String, Problem> {
    let key = format!("{table}[{index}].name");
    let name = name.ok_or_else(|| Problem::new(&key, "required"))?;
    let valid = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        return Err(Problem::new(
            key,
            format!("\"{name}\" is not a valid name: use 1 to 32 of a-z, 0-9, _ and -"),
        ));
    }
    Ok(name)
}

/// One of a fixed set of words; `None` means the default.
pub(super) fn choice<T: Copy>(
    key: &str,
    value: Option<&str>,
    default: T,
    options: &[(&str, T)],
) -> Result<T, Problem> {
    let Some(value) = value else {
        return Ok(default);
    };
    options
        .iter()
        .find(|(word, _)| *word == value)
        .map(|&(_, t)| t)
        .ok_or_else(|| {
            let names: Vec<String> = options.iter().map(|(w, _)| format!("\"{w}\"")).collect();
            Problem::new(
                key,
                format!("\"{value}\" is not one of {}", names.join(", ")),
            )
        })
}

pub(super) fn socket_addr(key: &str, value: Option<String>) -> Result<Option<SocketAddr>, Problem> {
    value
        .map(|v| {
            v.trim().parse().map_err(|_| {
                Problem::new(
                    key,
                    format!(
                        "\"{v}\" is not an IP:PORT address such as 127.0.0.1:8930 or [::1]:8930 \
                         (host names are not resolved)"
                    ),
                )
            })
        })
        .transpose()
}

/// Loopback, including IPv4-mapped IPv6 (`::ffff:127.0.0.1`).
pub(super) fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

pub(super) fn path(key: &str, value: Option<String>) -> Result<Option<PathBuf>, Problem> {
    match value {
        Some(v) if v.is_empty() => Err(Problem::new(key, "must not be empty")),
        v => Ok(v.map(PathBuf::from)),
    }
}

/// A non-empty token without whitespace (group names, key prefixes).
pub(super) fn word(key: &str, value: Option<String>) -> Result<Option<String>, Problem> {
    match value {
        Some(v) if v.is_empty() || !v.chars().all(|c| c.is_ascii_graphic()) => Err(Problem::new(
            key,
            "must be non-empty printable ASCII without spaces",
        )),
        v => Ok(v),
    }
}

pub(super) fn duration(
    key: &str,
    value: Option<&Loose>,
    default: Duration,
) -> Result<Duration, Problem> {
    match value {
        None => Ok(default),
        Some(Loose::String(text)) => humantime::parse_duration(text.trim()).map_err(|e| {
            Problem::new(
                key,
                format!(
                    "\"{text}\" is not a duration ({e}); write e.g. \"300s\", \"5m\" or \"1h\""
                ),
            )
        }),
        Some(other) => Err(Problem::new(
            key,
            format!(
                "expected a quoted duration such as \"300s\" or \"5m\", found a TOML {}",
                other.type_str()
            ),
        )),
    }
}

pub(super) fn positive(key: &str, value: Duration) -> Result<(), Problem> {
    if value.is_zero() {
        return Err(Problem::new(key, "must be greater than zero"));
    }
    Ok(())
}

pub(super) fn at_most(key: &str, value: Duration, max: Duration) -> Result<(), Problem> {
    if value > max {
        return Err(Problem::new(
            key,
            format!(
                "must be at most {} (found {})",
                format_duration(max),
                format_duration(value)
            ),
        ));
    }
    Ok(())
}

/// An octal permission string such as "0660" (or "660", "0o660"). A bare
/// TOML integer is refused: `660` would silently mean 0o1224.
pub(super) fn octal_mode(key: &str, value: Option<&Loose>, default: u32) -> Result<u32, Problem> {
    let text = match value {
        None => return Ok(default),
        Some(Loose::String(text)) => text,
        Some(other) => {
            return Err(Problem::new(
                key,
                format!(
                    "write the mode as a quoted octal string such as \"0660\", not a TOML {}",
                    other.type_str()
                ),
            ))
        }
    };
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let octal = !digits.is_empty()
        && digits.len() <= 4
        && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    let mode = octal
        .then(|| u32::from_str_radix(digits, 8).ok())
        .flatten()
        .ok_or_else(|| {
            Problem::new(
                key,
                format!("\"{text}\" is not an octal mode such as \"0660\""),
            )
        })?;
    if mode > 0o777 {
        return Err(Problem::new(
            key,
            format!("\"{text}\" sets setuid, setgid or sticky bits; use permission bits only, e.g. \"0660\""),
        ));
    }
    Ok(mode)
}

/// A count of at least one, `default` when not written.
pub(super) fn at_least_one(key: &str, value: Option<i64>, default: u32) -> Result<u32, Problem> {
    match value {
        None => Ok(default),
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| Problem::new(key, "must be at least 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Loose {
        Loose::String(s.to_owned())
    }

    #[test]
    fn durations_are_human_strings() {
        let d = |s: &str| duration("k", Some(&string(s)), Duration::ZERO);
        assert_eq!(d("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(d("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(d("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(d("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
        assert!(d("five minutes").is_err());
        assert!(d("").is_err());
        let err = duration("k", Some(&Loose::Integer(300)), Duration::ZERO).unwrap_err();
        assert!(err.message.contains("found a TOML integer"), "{err:?}");
        assert_eq!(
            duration("k", None, Duration::from_secs(7)),
            Ok(Duration::from_secs(7))
        );
    }

    #[test]
    fn loopback_includes_v6_and_mapped_v4() {
        for (addr, expected) in [
            ("127.0.0.1:1", true),
            ("127.9.9.9:1", true),
            ("[::1]:1", true),
            ("[::ffff:127.0.0.1]:1", true),
            ("0.0.0.0:1", false),
            ("[::]:1", false),
            ("10.0.0.1:1", false),
        ] {
            assert_eq!(is_loopback(&addr.parse().unwrap()), expected, "{addr}");
        }
    }

    #[test]
    fn api_base_drops_trailing_slashes() {
        let base = |s: &str| api_base("k", Some(s.to_owned()), "unused");
        assert_eq!(
            base("https://example.com/").as_deref(),
            Ok("https://example.com")
        );
        assert_eq!(
            base("http://127.0.0.1:9/wx//").as_deref(),
            Ok("http://127.0.0.1:9/wx")
        );
        for bad in [
            "ftp://x",
            "example.com",
            "https://",
            "https:///x",
            "https://a b",
            "https://x?y=1",
            "https://host:99999",
            "https://user:pw@example.com",
            "https://token@example.com",
            "http://localhost:x@example.com",
            "https://u:p/w@example.com",
        ] {
            assert!(base(bad).is_err(), "{bad}");
        }
        assert_eq!(api_base("k", None, "https://d").as_deref(), Ok("https://d"));
    }
}
