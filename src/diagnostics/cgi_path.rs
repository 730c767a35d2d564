//! The `cgi_path` of `quota/get`: the path of a WeChat API, such as
//! `/cgi-bin/message/custom/send`. Checked before anything goes upstream,
//! so a typo is a clear local error rather than a spent token call.

use std::fmt;

/// The path asked about when none is given: the token endpoint, whose
/// quota is the one that runs out (45009).
pub const DEFAULT_CGI_PATH: &str = "/cgi-bin/token";

/// Longer than any WeChat API path.
const MAX_LEN: usize = 200;

/// A well-formed API path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiPath(String);

/// Why a cgi_path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed cgi_path {shown:?}: {why}; expected an API path such as /cgi-bin/message/custom/send")]
pub struct BadCgiPath {
    shown: String,
    why: &'static str,
}

impl CgiPath {
    pub fn parse(path: &str) -> Result<Self, BadCgiPath> {
        let refuse = |why| {
            Err(BadCgiPath {
                shown: path.chars().take(64).collect(),
                why,
            })
        };
        if !path.starts_with('/') {
            return refuse("it must start with /");
        }
        if path.len() > MAX_LEN {
            return refuse("it is too long");
        }
        if !path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.'))
        {
            return refuse("only letters, digits and / _ - . may appear (no query)");
        }
        if path
            .split('/')
            .skip(1)
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        {
            return refuse("it has an empty, . or .. segment");
        }
        Ok(CgiPath(path.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for CgiPath {
    fn default() -> Self {
        CgiPath(DEFAULT_CGI_PATH.to_owned())
    }
}

impl fmt::Display for CgiPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_are_accepted() {
        for path in [
            "/cgi-bin/token",
            "/cgi-bin/stable_token",
            "/cgi-bin/message/custom/send",
            "/wxa/business/getuserphonenumber",
        ] {
            assert_eq!(CgiPath::parse(path).unwrap().as_str(), path);
        }
    }

    #[test]
    fn malformed_paths_are_refused_with_the_reason() {
        for (path, why) in [
            ("cgi-bin/token", "must start with /"),
            ("/cgi-bin/token?x=1", "no query"),
            ("/cgi-bin/../token", ".."),
            ("/cgi-bin//token", "empty"),
            ("/cgi-bin/token/", "empty"),
            ("/", "empty"),
            ("/cgi bin", "only letters"),
        ] {
            let err = CgiPath::parse(path).unwrap_err().to_string();
            assert!(err.contains(why), "{path}: {err}");
        }
        assert!(CgiPath::parse(&format!("/{}", "a".repeat(300))).is_err());
    }
}
