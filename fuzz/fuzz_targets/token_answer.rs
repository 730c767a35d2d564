//! `wechat::parse_token_answer` on arbitrary bytes.
//!
//! Properties:
//! - it never panics, and neither do the error's Display and classifiers;
//! - on Ok the token is non-empty and `expires_in > 0`;
//! - an error never quotes the answer's `access_token` (when it looks like
//!   a real one: at least 16 characters of `[A-Za-z0-9_-]` with upper and
//!   lower case and a digit, written once in the answer, no escapes).
//!   Other fields may be quoted: `"expires_in": "..."` gives serde's
//!   "invalid type: string ..." with the value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxbroker::wechat::parse_token_answer;

fuzz_target!(|body: &[u8]| {
    match parse_token_answer(body) {
        Ok(grant) => {
            assert!(!grant.token.expose().is_empty(), "empty token accepted");
            assert!(grant.expires_in > 0, "expires_in 0 accepted");
            let _ = grant.token.fingerprint();
        }
        Err(err) => {
            let shown = format!("{err}\n{err:?}");
            let _ = (err.class(), err.errcode(), err.errcode_label());
            let _ = (err.result_label(), err.fix());
            if let Some(token) = token_like(body) {
                assert!(
                    !shown.contains(&token),
                    "the access_token is shown:\n{shown}"
                );
            }
        }
    }
});

/// The answer's `access_token`, if it looks like a real token and the body
/// holds it only once. Bodies with escapes are skipped, so that every string
/// serde sees is spelled as is in the body (a duplicate key that
/// `serde_json::Value` would drop still counts).
fn token_like(body: &[u8]) -> Option<String> {
    if body.contains(&b'\\') {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let token = value.get("access_token")?.as_str()?.to_owned();
    let plausible = token.len() >= 16
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && token.bytes().any(|b| b.is_ascii_uppercase())
        && token.bytes().any(|b| b.is_ascii_lowercase())
        && token.bytes().any(|b| b.is_ascii_digit());
    if !plausible {
        return None;
    }
    let once = body
        .windows(token.len())
        .filter(|w| *w == token.as_bytes())
        .count()
        == 1;
    once.then_some(token)
}
