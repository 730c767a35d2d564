//! Where a forwarded call may go: the path rules that keep it under the
//! app's `api_base`, the credential endpoints it may never reach, and the
//! query with the pairs the broker sets itself removed.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};

use super::ProxyError;
use crate::http_io::query;
use crate::wechat_path::{self, percent_decode, Carries, Withheld};

/// The upstream URL of a forwarded call ([`target_url`]), unless the path
/// is one no forwarding route passes upstream, judged however it is
/// spelled. An operator action or an answer carrying refresh tokens or
/// permanent codes (section 21) is refused as such in every spelling,
/// malformed ones included, so the caller learns why; then a path that
/// could leave `api_base` is a bad path; then a credential fetch is
/// refused (section 17: only the refresher fetches).
pub(super) fn forward_target(
    api_base: &str,
    path: &str,
    query: Option<&str>,
    carries: Carries,
) -> Result<reqwest::Url, ProxyError> {
    let withheld = wechat_path::withheld(path);
    match withheld {
        Some(Withheld::CredentialFetch(_)) | None => {}
        Some(withheld) => return Err(ProxyError::Withheld(withheld)),
    }
    let url = target_url(api_base, path, query, carries)?;
    match withheld {
        Some(Withheld::CredentialFetch(endpoint)) => Err(ProxyError::CredentialEndpoint(endpoint)),
        _ => Ok(url),
    }
}

/// Refuses any path that could leave `api_base` once a URL parser or the
/// upstream normalises it: empty segments (`//`, a leading `/`), `.` and
/// `..` segments (also percent-encoded), backslashes, and encoded
/// separators, colons (`http:`), `?`, `#` or control characters.
pub fn check_path(path: &str) -> Result<(), ProxyError> {
    if path.is_empty() {
        return Err(ProxyError::BadPath("empty path"));
    }
    if path.starts_with('/') || path.contains("//") {
        return Err(ProxyError::BadPath("empty path segment"));
    }
    if path.contains('\\') {
        return Err(ProxyError::BadPath("backslash in path"));
    }
    for segment in path.split('/') {
        // Only a segment with a `%` has anything to decode.
        let decoded: Cow<[u8]> = if segment.contains('%') {
            Cow::Owned(percent_decode(segment))
        } else {
            Cow::Borrowed(segment.as_bytes())
        };
        if *decoded == *b"." || *decoded == *b".." {
            return Err(ProxyError::BadPath("dot segment in path"));
        }
        if decoded
            .iter()
            .any(|&b| matches!(b, b'/' | b'\\' | b':' | b'?' | b'#') || b < 0x20 || b == 0x7f)
        {
            return Err(ProxyError::BadPath(
                "separator, colon or control character in a path segment",
            ));
        }
    }
    Ok(())
}

/// `{api_base}/{path}?{query}` without the pairs the broker puts in for
/// what the call `carries` (the client's `access_token` for an app-token
/// call; `appid` and `secret` for a secret-bearing one; nothing for a
/// user-token call), checked to be still under `api_base` after parsing.
fn target_url(
    api_base: &str,
    path: &str,
    query: Option<&str>,
    carries: Carries,
) -> Result<reqwest::Url, ProxyError> {
    check_path(path)?;
    let base = parsed_base(api_base)?;
    let replaced: &[&str] = match carries {
        Carries::AppToken => &["access_token"],
        Carries::UserToken => &[],
        Carries::AppSecret => &["appid", "secret"],
    };
    let kept = query
        .map(|query| query::without(query, replaced))
        .unwrap_or_default();
    // The base's origin as parsed; only the path and query are set (and
    // encoded) here, so the host is never parsed twice.
    let base_path = base.path().trim_end_matches('/');
    let mut full_path = String::with_capacity(base_path.len() + 1 + path.len());
    full_path.push_str(base_path);
    full_path.push('/');
    full_path.push_str(path);
    let mut url = base.clone();
    url.set_path(&full_path);
    url.set_query((!kept.is_empty()).then_some(kept.as_str()));
    let under_base = url
        .path()
        .strip_prefix(base_path)
        .is_some_and(|rest| rest.starts_with('/'));
    if url.origin() != base.origin() || !under_base {
        return Err(ProxyError::BadPath("path leaves api_base"));
    }
    Ok(url)
}

/// `api_base` parsed, from a cache: the few bases a broker has are
/// parsed once, not on every call (a host's parsing is the dearest part).
fn parsed_base(api_base: &str) -> Result<reqwest::Url, ProxyError> {
    /// More than any configuration has; past it the cache starts again.
    const MOST: usize = 1024;
    static BASES: LazyLock<RwLock<HashMap<String, reqwest::Url>>> = LazyLock::new(Default::default);
    let cached = BASES
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(api_base)
        .cloned();
    if let Some(base) = cached {
        return Ok(base);
    }
    let base = reqwest::Url::parse(api_base)
        .map_err(|_| ProxyError::Upstream("the app's api_base is not a URL".into()))?;
    let mut bases = BASES.write().unwrap_or_else(|e| e.into_inner());
    if bases.len() >= MOST {
        bases.clear();
    }
    bases.insert(api_base.to_owned(), base.clone());
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_leave_api_base_are_refused() {
        for path in [
            "",
            "/etc/passwd",
            "tcb//x",
            "../x",
            "tcb/../../x",
            "tcb/%2e%2e/x",
            "tcb/.%2E/x",
            "tcb/%2E/x",
            "./x",
            "tcb\\..\\x",
            "tcb/%5c..",
            "tcb/a%2fb",
            "http://evil.example/x",
            "http:/evil.example",
            "tcb/%3a",
            "tcb/a%00",
        ] {
            assert!(check_path(path).is_err(), "{path:?} must be refused");
        }
        for path in [
            "tcb/invokecloudfunction",
            "cgi-bin/openapi/quota/get",
            "wxa/getwxacodeunlimit",
            "cgi-bin/message/custom/send",
            "a.b/c..d/...",
            "tcb/x/",
        ] {
            assert!(check_path(path).is_ok(), "{path:?} must be allowed");
        }
    }

    #[test]
    fn target_stays_under_api_base() {
        let url = target_url(
            "http://127.0.0.1:9/base",
            "tcb/invokecloudfunction",
            Some("env=e%20&access_token=CLIENT&name=f&%61ccess_token=X"),
            Carries::AppToken,
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/base/tcb/invokecloudfunction?env=e%20&name=f"
        );
        let sns = target_url(
            "http://127.0.0.1:9",
            "sns/jscode2session",
            Some("appid=A&secret=placeholder&js_code=c&access_token=U"),
            Carries::AppSecret,
        )
        .unwrap();
        assert_eq!(sns.query(), Some("js_code=c&access_token=U"));
        let user = target_url(
            "http://127.0.0.1:9",
            "sns/userinfo",
            Some("access_token=USER&openid=o"),
            Carries::UserToken,
        )
        .unwrap();
        assert_eq!(user.query(), Some("access_token=USER&openid=o"));
        assert!(
            target_url("http://127.0.0.1:9", "@evil/x", None, Carries::AppToken)
                .is_ok_and(|url| url.host_str() == Some("127.0.0.1"))
        );
    }
}
