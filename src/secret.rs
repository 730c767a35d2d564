//! Newtypes for the two kinds of credential the broker handles: the app
//! secret and the access token. Their `Debug` and `Display` never show the
//! value, so a stray `{:?}` in a log line cannot leak one.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// An app secret (or WeCom corpsecret). Only [`Secret::expose`] reveals it,
/// and only the upstream request builder calls that.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Arc::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An access token. Logs show its [`fingerprint`](AccessToken::fingerprint);
/// only token responses carry the value itself.
#[derive(Clone)]
pub struct AccessToken {
    value: Arc<str>,
    /// Whether the value can go into JSON between quotes as it is; decided
    /// once here rather than on every answer that carries it.
    json_plain: bool,
}

impl PartialEq for AccessToken {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for AccessToken {}

impl std::hash::Hash for AccessToken {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.value.hash(state);
    }
}

impl AccessToken {
    pub fn new(value: impl Into<String>) -> Self {
        let value: Arc<str> = Arc::from(value.into());
        let json_plain = is_json_plain(&value);
        AccessToken { value, json_plain }
    }

    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Whether `other` is this very value (a clone of it), not merely an
    /// equal one: a pointer comparison.
    pub fn is(&self, other: &AccessToken) -> bool {
        Arc::ptr_eq(&self.value, &other.value)
    }

    /// True when the value needs no JSON escaping (WeChat's tokens never do).
    pub fn is_json_plain(&self) -> bool {
        self.json_plain
    }

    /// The first 6 hex characters of the token's SHA-256: enough to tell two
    /// tokens apart in a log, useless to an attacker.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.value)
    }
}

/// Whether `value` can go into JSON between quotes as it is: nothing in
/// it needs escaping.
pub fn is_json_plain(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The fingerprint of any token-like string (see [`AccessToken::fingerprint`]).
pub fn fingerprint(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    digest[..3].iter().map(|b| format!("{b:02x}")).collect()
}

// Tokens are persisted by the stores, so they serialize as the bare string.
impl serde::Serialize for AccessToken {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.value)
    }
}

impl<'de> serde::Deserialize<'de> for AccessToken {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(AccessToken::new)
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessToken({})", self.fingerprint())
    }
}

impl fmt::Display for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("s3cr3t-value");
        assert!(!format!("{secret:?} {secret}").contains("s3cr3t"));
        let token = AccessToken::new("87_tokenvalue");
        let shown = format!("{token:?} {token}");
        assert!(!shown.contains("tokenvalue"));
        assert!(shown.contains(&token.fingerprint()));
    }

    #[test]
    fn fingerprint_is_six_hex_chars_of_sha256() {
        // sha256("abc") = ba7816bf...
        assert_eq!(fingerprint("abc"), "ba7816");
    }
}
