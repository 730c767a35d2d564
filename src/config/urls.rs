//! URLs in the configuration (`api_base`, `store.url`): how one is shown
//! without the secrets it may carry, and which host one really names.
//!
//! Userinfo (`user:password@`) is the secret part of a URL: a Redis URL
//! legitimately holds a password there, and a pasted `api_base` might.
//! Everything that shows configuration (`check-config`, `Debug`, error
//! messages, log lines) goes through [`masked`]. The host is judged by the
//! same parser reqwest uses (the `url` crate), never by splitting the text
//! at `:` — in `http://localhost:x@example.com` the host is `example.com`.

use std::net::IpAddr;

use url::{Host, Url};

const MASK: &str = "***";

/// `url` with the password in its userinfo (`user:***@host`) and any
/// `pass`/`password` query parameter (`redis+unix:///sock?pass=***`)
/// masked. A userinfo without a `:` is masked whole (`***@host`): written
/// alone it is as likely a password or token as a user name.
///
/// Works on the text, not on a parsed URL, so it also masks what does not
/// parse (a value being refused, shown in its error message), and errs on
/// the side of masking: the last `@` before any query ends the userinfo,
/// even if an unencoded `@` or `/` sits in the password.
pub(crate) fn masked(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (before_query, query) = match rest.split_once(['?', '#']) {
        Some((before, _)) => (before, Some(&rest[before.len()..])),
        None => (rest, None),
    };
    let location = match before_query.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:{MASK}@{host}"),
            None => format!("{MASK}@{host}"),
        },
        None => before_query.to_owned(),
    };
    let mut shown = match scheme {
        Some(scheme) => format!("{scheme}://{location}"),
        None => location,
    };
    if let Some(query) = query {
        shown.push_str(&masked_query(query));
    }
    shown
}

/// `?a=1&pass=x#f` (or `#f`) with the values of `pass` and `password`
/// masked; a fragment is kept as it is.
fn masked_query(tail: &str) -> String {
    let Some(query) = tail.strip_prefix('?') else {
        return tail.to_owned();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((before, _)) => (before, &query[before.len()..]),
        None => (query, ""),
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if name == "pass" || name == "password" => format!("{name}={MASK}"),
            _ => param.to_owned(),
        })
        .collect();
    format!("?{}{fragment}", params.join("&"))
}

/// Whether `url` names this host: `localhost` or a loopback address
/// (including IPv4-mapped IPv6). `false` for what does not parse.
pub(crate) fn is_local_host(url: &str) -> bool {
    let Ok(url) = Url::parse(url) else {
        return false;
    };
    match url.host() {
        // The parser lowercases domains.
        Some(Host::Domain(domain)) => domain == "localhost",
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).to_canonical().is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
            ("rediss://user:pw@h/1", "rediss://user:***@h/1"),
            ("redis://pw@h", "redis://***@h"),
            ("redis://:p@ss/w@h/0", "redis://:***@h/0"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=pw",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
            (
                "redis+unix:///run/redis.sock?password=pw#x",
                "redis+unix:///run/redis.sock?password=***#x",
            ),
            (
                "http://localhost:x@example.com/wx",
                "http://localhost:***@example.com/wx",
            ),
            ("https://api.weixin.qq.com", "https://api.weixin.qq.com"),
            // Not URLs at all: still nothing after the userinfo's end.
            ("user:pw@host", "user:***@host"),
            ("htps://token@host", "htps://***@host"),
            ("nonsense", "nonsense"),
        ] {
            assert_eq!(masked(url), shown, "{url}");
        }
    }

    #[test]
    fn the_host_is_the_one_after_the_userinfo() {
        for (url, local) in [
            ("http://127.0.0.1:9000", true),
            ("http://127.9.9.9", true),
            ("http://localhost/wx", true),
            ("http://LOCALHOST:80", true),
            ("http://[::1]:8080", true),
            ("http://[::ffff:127.0.0.1]:8080", true),
            ("http://10.1.2.3", false),
            ("http://api.weixin.qq.com", false),
            ("http://localhost:x@api.weixin.qq.com", false),
            ("http://127.0.0.1@10.0.0.1", false),
            ("http://localhost.example.com", false),
            ("not a url", false),
        ] {
            assert_eq!(is_local_host(url), local, "{url}");
        }
    }
}
