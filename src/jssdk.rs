//! JS-SDK signatures (DESIGN.md section 11): the object a page passes to
//! `wx.config` (or WeCom's `wx.agentConfig`), signed with a ticket that
//! never leaves the broker.
//!
//! `signature = sha1("jsapi_ticket=T&noncestr=N&timestamp=S&url=U")`,
//! where U is the page's URL exactly as the browser has it, without its
//! `#` part. The URL is checked but never rewritten: WeChat signs the
//! page's own string, and a normalised one (a default port dropped, a
//! percent-escape changed) would not match.

use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::Serialize;
use sha1::{Digest, Sha1};

/// The length of a `nonceStr`; WeChat's own examples use 16.
const NONCE_LEN: usize = 16;
/// Page URLs longer than this are refused; browsers cap theirs near here.
const MAX_URL_LEN: usize = 8192;

/// Why a page URL cannot be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPageUrl {
    #[error("the url must be an absolute http:// or https:// URL with a host")]
    NotAbsoluteHttp,
    #[error("the url is longer than {MAX_URL_LEN} bytes")]
    TooLong,
}

/// The part of `url` that is signed: all of it up to any `#`, once it is
/// known to be an absolute http(s) URL with a host.
pub fn signed_part(url: &str) -> Result<&str, BadPageUrl> {
    if url.len() > MAX_URL_LEN {
        return Err(BadPageUrl::TooLong);
    }
    let page = url.split('#').next().unwrap_or_default();
    let parsed = url::Url::parse(page).map_err(|_| BadPageUrl::NotAbsoluteHttp)?;
    let http = matches!(parsed.scheme(), "http" | "https");
    // The parser forgives what a browser would never send as a location:
    // the string must itself start with the scheme, with no whitespace.
    let prefix = format!("{}://", parsed.scheme());
    let literal = page
        .strip_prefix(&prefix)
        .is_some_and(|rest| !rest.starts_with('/'))
        && !page.chars().any(|c| c.is_whitespace() || c.is_control());
    if !http || !literal || parsed.host_str().is_none_or(str::is_empty) {
        return Err(BadPageUrl::NotAbsoluteHttp);
    }
    Ok(page)
}

/// The hex SHA-1 signature of a page for a ticket.
pub fn signature(ticket: &str, nonce: &str, timestamp: u64, page: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(format!(
        "jsapi_ticket={ticket}&noncestr={nonce}&timestamp={timestamp}&url={page}"
    ));
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A fresh random `nonceStr`.
pub fn nonce() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(NONCE_LEN)
        .map(char::from)
        .collect()
}

/// `wx.config`'s object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WxConfig {
    pub app_id: String,
    pub timestamp: u64,
    pub nonce_str: String,
    pub signature: String,
}

/// `wx.agentConfig`'s object (WeCom).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    pub corpid: String,
    pub agentid: u64,
    pub timestamp: u64,
    pub nonce_str: String,
    pub signature: String,
}

/// Signs `page` for `wx.config` with `ticket`, now.
pub fn wx_config(appid: &str, ticket: &str, page: &str, timestamp: u64) -> WxConfig {
    let nonce_str = nonce();
    WxConfig {
        app_id: appid.to_owned(),
        timestamp,
        signature: signature(ticket, &nonce_str, timestamp, page),
        nonce_str,
    }
}

/// Signs `page` for `wx.agentConfig` with the agent's ticket, now.
pub fn agent_config(
    corpid: &str,
    agentid: u64,
    ticket: &str,
    page: &str,
    timestamp: u64,
) -> AgentConfig {
    let nonce_str = nonce();
    AgentConfig {
        corpid: corpid.to_owned(),
        agentid,
        timestamp,
        signature: signature(ticket, &nonce_str, timestamp, page),
        nonce_str,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_wechats_own_example() {
        // The worked example of WeChat's JS-SDK documentation (appendix 1).
        let ticket = "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg";
        assert_eq!(
            signature(
                ticket,
                "Wm3WZYTPz0wzccnW",
                1414587457,
                "http://mp.weixin.qq.com?params=value"
            ),
            "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
        );
    }

    #[test]
    fn the_fragment_is_dropped_and_nothing_else_changes() {
        assert_eq!(
            signed_part("https://shop.example.com:443/p/a%2Fb?x=1&y=%E4#/route?z=2"),
            Ok("https://shop.example.com:443/p/a%2Fb?x=1&y=%E4")
        );
        assert_eq!(
            signed_part("http://h/page"),
            Ok("http://h/page"),
            "a plain http page is signed too"
        );
    }

    #[test]
    fn only_absolute_http_urls_are_signed() {
        for bad in [
            "",
            "/page?x=1",
            "page.html",
            "ftp://h/file",
            "javascript:alert(1)",
            "https://",
            "https:///path",
            " https://h/page",
            "https://h/pa ge",
            "HTTPS://h/page",
            "file:///etc/passwd",
        ] {
            assert_eq!(
                signed_part(bad),
                Err(BadPageUrl::NotAbsoluteHttp),
                "{bad:?}"
            );
        }
        let long = format!("https://h/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(signed_part(&long), Err(BadPageUrl::TooLong));
    }

    #[test]
    fn each_signature_has_its_own_nonce() {
        let (a, b) = (
            wx_config("wx1", "t", "https://h/", 1),
            wx_config("wx1", "t", "https://h/", 1),
        );
        assert_ne!(a.nonce_str, b.nonce_str);
        assert_eq!(a.nonce_str.len(), NONCE_LEN);
        assert_eq!(a.signature, signature("t", &a.nonce_str, 1, "https://h/"));
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(
            json.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["appId", "nonceStr", "signature", "timestamp"]
        );
        let agent =
            serde_json::to_value(agent_config("ww1", 1000002, "t", "https://h/", 1)).unwrap();
        assert_eq!(agent["corpid"], "ww1");
        assert_eq!(agent["agentid"], 1000002);
        assert!(agent["nonceStr"].is_string());
    }
}
