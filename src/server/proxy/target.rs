//! Where a forwarded call may go: the path rules that keep it under the
//! app's `api_base`, the credential endpoints it may never reach, and the
//! query with the pairs the broker sets itself removed. A call's target is
//! its request line as sent (origin form), built once from the checked
//! path: a path made only of characters no URL parser rewrites is used as
//! it is, any other goes through the URL parser, as a browser would send it.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use http::HeaderValue;
use url::{form_urlencoded, Position};

use super::{Forward, ProxyError};
use crate::http_io::query;
use crate::upstream::Origin;
use crate::wechat_path::{percent_decode, Carries, Withheld};

/// Where a forwarded call goes: `api_base`'s origin, and the path and
/// query below it (origin form), without the credential, which is put in
/// at the last moment (`origin_form`) so it is never kept.
pub struct Destination {
    base: Arc<Base>,
    path_and_query: String,
    /// Where the path ends and the query, if any, starts.
    path_end: usize,
}

impl Destination {
    /// The path the call goes to, `api_base`'s own included.
    pub fn path(&self) -> &str {
        &self.path_and_query[..self.path_end]
    }

    /// Adds `name=value` to the query, form-encoded.
    pub(super) fn append_pair(&mut self, name: &str, value: &str) {
        push_pair(&mut self.path_and_query, self.path_end, name, value);
    }

    /// The request target as sent: the path and query, with `credential`
    /// (a parameter's name and the token) last in the query.
    pub(super) fn origin_form(&self, credential: Option<(&str, &str)>) -> String {
        let Some((name, token)) = credential else {
            return self.path_and_query.clone();
        };
        let mut target =
            String::with_capacity(self.path_and_query.len() + name.len() + token.len() + 2);
        target.push_str(&self.path_and_query);
        push_pair(&mut target, self.path_end, name, token);
        target
    }

    /// The whole URL, for a client that wants one (through an HTTP proxy).
    pub(super) fn url(&self, credential: Option<(&str, &str)>) -> Result<reqwest::Url, ProxyError> {
        let url = format!(
            "{}{}",
            &self.base.url[..Position::BeforePath],
            self.origin_form(credential)
        );
        reqwest::Url::parse(&url).map_err(|_| NOT_A_TARGET)
    }

    /// Where the call connects, as `api_base` names it.
    pub(super) fn origin(&self) -> Result<&Origin, ProxyError> {
        self.base.origin.as_ref().ok_or(ProxyError::Upstream(
            "api_base is not an http(s) URL".into(),
        ))
    }

    /// The `Host` header: `api_base`'s host and any explicit port.
    pub(super) fn host(&self) -> Result<&HeaderValue, ProxyError> {
        self.base.host.as_ref().ok_or(ProxyError::Upstream(
            "api_base's host is not a valid Host header".into(),
        ))
    }
}

/// A request target neither `http` nor `url` would take.
pub(super) const NOT_A_TARGET: ProxyError = ProxyError::BadPath("not a valid request target");

/// Appends `name=value`, form-encoded, to `target`'s query (starting one
/// when the path, `path_end` bytes long, has none).
fn push_pair(target: &mut String, path_end: usize, name: &str, value: &str) {
    target.push(if target.len() > path_end { '&' } else { '?' });
    push_form_encoded(target, name);
    target.push('=');
    push_form_encoded(target, value);
}

/// `value` form-encoded; tokens and names need no encoding and are copied.
fn push_form_encoded(out: &mut String, value: &str) {
    /// The bytes form encoding leaves as they are.
    const PLAIN: [bool; 256] = {
        let mut plain = [false; 256];
        let mut byte = 0;
        while byte < 256 {
            let b = byte as u8;
            plain[byte] = b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_');
            byte += 1;
        }
        plain
    };
    // Every byte looked at, without a branch for each: tokens are short.
    let all_plain = value
        .bytes()
        .fold(true, |plain, byte| plain & PLAIN[usize::from(byte)]);
    if all_plain {
        out.push_str(value);
    } else {
        out.extend(form_urlencoded::byte_serialize(value.as_bytes()));
    }
}

/// The upstream target of a forwarded call ([`target`]), unless the path
/// is one no forwarding route passes upstream, judged however it is
/// spelled. An operator action or an answer carrying refresh tokens or
/// permanent codes (section 21) is refused as such in every spelling,
/// malformed ones included, so the caller learns why; then a path that
/// could leave `api_base` is a bad path; then a credential fetch is
/// refused (section 17: only the refresher fetches).
pub(super) fn forward_target(
    api_base: &str,
    request: &Forward<'_>,
    query: Option<&str>,
    carries: Carries,
) -> Result<Destination, ProxyError> {
    let withheld = request.judged.withheld();
    match withheld {
        Some(Withheld::CredentialFetch(_)) | None => {}
        Some(withheld) => return Err(ProxyError::Withheld(withheld)),
    }
    let target = target(api_base, request.path, query, carries)?;
    match withheld {
        Some(Withheld::CredentialFetch(endpoint)) => Err(ProxyError::CredentialEndpoint(endpoint)),
        _ => Ok(target),
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
/// user-token call), checked to be still under `api_base`.
fn target(
    api_base: &str,
    path: &str,
    query: Option<&str>,
    carries: Carries,
) -> Result<Destination, ProxyError> {
    check_path(path)?;
    let base = Base::of(api_base)?;
    let replaced: &[&str] = match carries {
        Carries::AppToken => &["access_token"],
        Carries::UserToken => &[],
        Carries::AppSecret => &["appid", "secret"],
    };
    let kept = query
        .map(|query| query::without(query, replaced))
        .unwrap_or_default();
    if !(path.bytes().all(is_kept_in_path) && kept.bytes().all(is_kept_in_query)) {
        return parsed_target(base, path, &kept);
    }
    // Checked, and spelled as a URL parser would leave it: below the base
    // path as it stands.
    let mut path_and_query = String::with_capacity(base.path.len() + path.len() + kept.len() + 2);
    path_and_query.push_str(&base.path);
    path_and_query.push('/');
    path_and_query.push_str(path);
    let path_end = path_and_query.len();
    if !kept.is_empty() {
        path_and_query.push('?');
        path_and_query.push_str(&kept);
    }
    Ok(Destination {
        base,
        path_and_query,
        path_end,
    })
}

/// A path byte no URL parser encodes or reads as anything but itself
/// (RFC 3986's unreserved and sub-delimiters, `:`, `@`, `/` and `%`),
/// once [`check_path`] has refused dot segments and separators.
fn is_kept_in_path(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'%'
                | b'/'
        )
}

/// A query byte no URL parser encodes: as in a path, and `?`, but not
/// `'` (which it encodes in an http(s) query).
fn is_kept_in_query(byte: u8) -> bool {
    byte != b'\'' && (byte == b'?' || is_kept_in_path(byte))
}

/// [`target`] for a path or query with characters a URL parser encodes:
/// its spelling is the parser's, and it must still be under the base.
fn parsed_target(base: Arc<Base>, path: &str, kept: &str) -> Result<Destination, ProxyError> {
    let mut url = base.url.clone();
    url.set_path(&format!("{}/{path}", base.path));
    url.set_query((!kept.is_empty()).then_some(kept));
    let under_base = url
        .path()
        .strip_prefix(base.path.as_str())
        .is_some_and(|rest| rest.starts_with('/'));
    if url.origin() != base.url.origin() || !under_base {
        return Err(ProxyError::BadPath("path leaves api_base"));
    }
    let path_and_query = url[Position::BeforePath..Position::AfterQuery].to_owned();
    let path_end = url.path().len();
    Ok(Destination {
        base,
        path_and_query,
        path_end,
    })
}

/// An `api_base`, parsed once: where its calls connect, the `Host` they
/// name, and the path they go below.
struct Base {
    api_base: String,
    url: reqwest::Url,
    origin: Option<Origin>,
    host: Option<HeaderValue>,
    /// The URL's path without trailing slashes.
    path: String,
}

impl Base {
    /// `api_base` parsed, from a cache: the few bases a broker has are
    /// parsed once, not on every call (a host's parsing is the dearest
    /// part), and a thread asks the cache only when its last base was
    /// another.
    fn of(api_base: &str) -> Result<Arc<Base>, ProxyError> {
        thread_local! {
            static LAST: RefCell<Option<Arc<Base>>> = const { RefCell::new(None) };
        }
        let last = LAST.with_borrow(|last| {
            last.as_ref()
                .filter(|base| base.api_base == api_base)
                .cloned()
        });
        if let Some(base) = last {
            return Ok(base);
        }
        let base = Base::cached(api_base)?;
        LAST.set(Some(base.clone()));
        Ok(base)
    }

    fn cached(api_base: &str) -> Result<Arc<Base>, ProxyError> {
        /// More than any configuration has; past it the cache starts again.
        const MOST: usize = 1024;
        static BASES: LazyLock<RwLock<HashMap<String, Arc<Base>>>> =
            LazyLock::new(Default::default);
        let cached = BASES
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(api_base)
            .cloned();
        if let Some(base) = cached {
            return Ok(base);
        }
        let url = reqwest::Url::parse(api_base)
            .map_err(|_| ProxyError::Upstream("the app's api_base is not a URL".into()))?;
        let base = Arc::new(Base {
            api_base: api_base.to_owned(),
            origin: Origin::of(&url),
            host: HeaderValue::from_str(&url[Position::BeforeHost..Position::AfterPort]).ok(),
            path: url.path().trim_end_matches('/').to_owned(),
            url,
        });
        let mut bases = BASES.write().unwrap_or_else(|e| e.into_inner());
        if bases.len() >= MOST {
            bases.clear();
        }
        bases.insert(api_base.to_owned(), base.clone());
        Ok(base)
    }
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

    fn target_url(api_base: &str, path: &str, query: Option<&str>, carries: Carries) -> String {
        let target = target(api_base, path, query, carries).unwrap();
        target.url(None).unwrap().to_string()
    }

    #[test]
    fn target_stays_under_api_base() {
        assert_eq!(
            target_url(
                "http://127.0.0.1:9/base",
                "tcb/invokecloudfunction",
                Some("env=e%20&access_token=CLIENT&name=f&%61ccess_token=X"),
                Carries::AppToken,
            ),
            "http://127.0.0.1:9/base/tcb/invokecloudfunction?env=e%20&name=f"
        );
        assert_eq!(
            target_url(
                "http://127.0.0.1:9",
                "sns/jscode2session",
                Some("appid=A&secret=placeholder&js_code=c&access_token=U"),
                Carries::AppSecret,
            ),
            "http://127.0.0.1:9/sns/jscode2session?js_code=c&access_token=U"
        );
        assert_eq!(
            target_url(
                "http://127.0.0.1:9",
                "sns/userinfo",
                Some("access_token=USER&openid=o"),
                Carries::UserToken,
            ),
            "http://127.0.0.1:9/sns/userinfo?access_token=USER&openid=o"
        );
        let at = target("http://127.0.0.1:9", "@evil/x", None, Carries::AppToken).unwrap();
        assert_eq!(at.url(None).unwrap().host_str(), Some("127.0.0.1"));
        assert_eq!(at.path(), "/@evil/x");
    }

    #[test]
    fn a_target_is_spelled_as_the_url_parser_spells_it() {
        let paths = [
            "tcb/invokecloudfunction",
            "cgi-bin/user/info",
            "a b/c",
            "x\"y/<z>",
            "caf\u{e9}/x",
            "a'b/c;d=e/f@g/%41%zz",
            "{x}/`y`/|z|",
            "tcb/x/",
            "!$&()*+,~",
        ];
        let queries = [
            None,
            Some(""),
            Some("a=1&b=2"),
            Some("q=a b&r=\"x\""),
            Some("it's=1"),
            Some("v=%E4%BD%A0&w=?x&y=/z"),
            Some("z=\u{4f60}&{}=|"),
        ];
        for base in [
            "http://127.0.0.1:9",
            "http://127.0.0.1:9/base/",
            "https://h.example/a%20b",
        ] {
            for path in paths {
                for query in queries {
                    let built = target(base, path, query, Carries::AppToken).unwrap();
                    let kept = query
                        .map(|q| query::without(q, &["access_token"]))
                        .unwrap_or_default();
                    let parsed = parsed_target(Base::of(base).unwrap(), path, &kept).unwrap();
                    assert_eq!(
                        built.path_and_query, parsed.path_and_query,
                        "{base} {path} {query:?}"
                    );
                    assert_eq!(built.path(), parsed.path(), "{base} {path} {query:?}");
                    let credential = Some(("access_token", "T/+ k"));
                    let mut appended = parsed.base.url.clone();
                    appended.set_path(parsed.path());
                    appended.set_query(parsed.path_and_query.get(parsed.path_end + 1..));
                    appended
                        .query_pairs_mut()
                        .append_pair("access_token", "T/+ k");
                    assert_eq!(
                        built.url(credential).unwrap().as_str(),
                        appended.as_str(),
                        "{base} {path} {query:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_token_goes_last_in_the_query_encoded_as_a_form() {
        let with = |path, query, credential| {
            target("http://127.0.0.1:9/base", path, query, Carries::UserToken)
                .unwrap()
                .origin_form(credential)
        };
        assert_eq!(
            with("tcb/x", Some("env=e%20"), Some(("access_token", "t/+ k"))),
            "/base/tcb/x?env=e%20&access_token=t%2F%2B+k"
        );
        assert_eq!(
            with(
                "cgi-bin/getcallbackip",
                None,
                Some(("component_access_token", "T"))
            ),
            "/base/cgi-bin/getcallbackip?component_access_token=T"
        );
        assert_eq!(
            with("cgi-bin/getcallbackip", None, None),
            "/base/cgi-bin/getcallbackip"
        );
        let mut secret = target(
            "http://127.0.0.1:9",
            "sns/jscode2session",
            None,
            Carries::AppSecret,
        )
        .unwrap();
        secret.append_pair("appid", "wx1");
        secret.append_pair("secret", "s&=?");
        assert_eq!(
            secret.origin_form(None),
            "/sns/jscode2session?appid=wx1&secret=s%26%3D%3F"
        );
    }
}
