//! `[[clients]] apis = [...]` (DESIGN.md section 20): the WeChat API
//! paths a client may call through the forwarding routes. A pattern is a
//! path (`/cgi-bin/message/custom/send`) or, with a trailing `*`, a
//! prefix (`/tcb/*`). Requests are matched after the broker's
//! percent-decoding and path normalisation (lowercase, no empty or dot
//! segments, no trailing slash), so a pattern that could never equal such
//! a path is refused here rather than silently matching nothing.

/// One validated `apis` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPattern {
    /// As configured, for `check-config`.
    text: String,
    /// Lowercase, without the leading `/` and the trailing `*`.
    path: String,
    prefix: bool,
}

impl ApiPattern {
    /// The pattern `text`, or why it could never match a request.
    pub fn parse(text: &str) -> Result<ApiPattern, &'static str> {
        if text.is_empty() {
            return Err("is empty: write a path such as \"/cgi-bin/message/custom/send\" or a prefix such as \"/tcb/*\"");
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err("must start with '/', as in \"/cgi-bin/message/custom/send\"");
        };
        let (path, prefix) = match rest.strip_suffix('*') {
            Some(path) => (path, true),
            None => (rest, false),
        };
        if path.contains('*') {
            return Err("may hold '*' only at its end, where it matches any rest of the path");
        }
        if path.contains('%') || path.contains("..") {
            return Err("may not contain '%' or '..': requests are matched decoded and normalised, so this pattern never matches");
        }
        let unroutable = |b: u8| {
            b.is_ascii_whitespace()
                || b.is_ascii_control()
                || !b.is_ascii()
                || matches!(b, b'?' | b'#' | b'\\' | b';')
        };
        if path.bytes().any(unroutable) {
            return Err("may not contain spaces, control characters, non-ASCII, '?', '#', ';' or '\\': requests are matched by path alone, so this pattern never matches");
        }
        let segments: Vec<&str> = path.split('/').collect();
        let last = segments.len() - 1;
        let empty_or_dot = segments
            .iter()
            .enumerate()
            // A prefix may end in '/' ("/tcb/*"): its last segment is empty.
            .any(|(i, s)| *s == "." || (s.is_empty() && !(prefix && i == last)));
        if empty_or_dot {
            return Err("has an empty or '.' segment ('//', '/./' or a trailing '/'), which a normalised path never has: for a prefix write \"/cgi-bin/message/*\"");
        }
        Ok(ApiPattern {
            text: text.to_owned(),
            path: path.to_ascii_lowercase(),
            prefix,
        })
    }

    /// Whether a normalised path (lowercase, no leading slash) matches.
    pub fn matches(&self, normalised: &str) -> bool {
        if self.prefix {
            normalised.starts_with(&self.path)
        } else {
            normalised == self.path
        }
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_prefixes_match_normalised_paths() {
        let exact = ApiPattern::parse("/cgi-bin/message/custom/send").unwrap();
        assert!(exact.matches("cgi-bin/message/custom/send"));
        assert!(!exact.matches("cgi-bin/message/custom/send/x"));
        assert!(!exact.matches("cgi-bin/message/custom"));
        let prefix = ApiPattern::parse("/cgi-bin/message/*").unwrap();
        assert!(prefix.matches("cgi-bin/message/custom/send"));
        assert!(!prefix.matches("cgi-bin/message"));
        assert!(!prefix.matches("cgi-bin/messages/x"));
        let mixed = ApiPattern::parse("/WXA/*").unwrap();
        assert!(mixed.matches("wxa/getwxacodeunlimit"));
        assert_eq!(mixed.as_str(), "/WXA/*");
        assert!(ApiPattern::parse("/*").unwrap().matches("anything/at/all"));
        assert!(ApiPattern::parse("/tcb*").unwrap().matches("tcb/x"));
    }

    #[test]
    fn patterns_that_can_never_match_are_refused() {
        for text in [
            "",
            "cgi-bin/message/*",
            "*",
            "/cgi-bin/*/send",
            "/cgi-bin/**",
            "/cgi-bin/../token",
            "/cgi-bin/%74oken",
            "/cgi-bin//message",
            "/cgi-bin/./message",
            "/cgi-bin/message/",
            "/",
            "/cgi-bin/message custom",
            "/cgi-bin/message?x=1",
            "/cgi-bin\\message",
            "/cgi-bin/消息",
        ] {
            assert!(ApiPattern::parse(text).is_err(), "{text:?} must be refused");
        }
    }
}
