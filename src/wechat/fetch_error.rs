//! Why an upstream credential call failed ([`FetchError`]), and the one
//! place where a failure is classified into what the refresher should do
//! about it ([`ErrorClass`], DESIGN.md section 4, rule 5): the errcodes
//! that mean a wrong configuration and the fix to log, WeChat's daily
//! quota, the token rejections, and the bounded metric labels.

use std::time::Duration;

/// Why one upstream token call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("wechat errcode {errcode}: {errmsg}")]
    Api { errcode: i64, errmsg: String },
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("transport error: {0}")]
    Transport(String),
    #[error("upstream answered http status {0}")]
    Http(u16),
    /// A credential fetch never follows a redirect: the request carries the
    /// secret, and wherever the redirect points is not WeChat.
    #[error(
        "upstream answered a redirect (http status {0}), which a credential fetch never follows"
    )]
    Redirect(u16),
    #[error("malformed upstream answer: {0}")]
    Malformed(String),
    /// A credential fetched with another (a ticket with the app's access
    /// token) could not be fetched because that one is unavailable or was
    /// rejected again after a refresh. Transient: the parent's own
    /// refresher deals with the cause.
    #[error("the app's access token is unavailable: {0}")]
    Parent(String),
    /// A credential fetched with a pushed ticket (a platform's component
    /// token) cannot be asked for yet: upstream has not pushed the ticket
    /// named, or refused the last one. Transient: the push is on its way.
    #[error("no valid {0} yet; waiting for its push")]
    NoPushedTicket(&'static str),
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: retry with exponential backoff and full jitter.
    Retry,
    /// Wrong credentials or setup: an operator must act; try rarely.
    Config,
    /// The app's daily quota is spent: nothing helps before Beijing midnight.
    QuotaExhausted,
}

/// Errcodes that mean the configuration is wrong, with the fix to log.
const CONFIG_ERRCODES: &[(i64, &str)] = &[
    (
        40001,
        "the app secret is wrong: check secret_env/secret_file against the WeChat console",
    ),
    (
        40125,
        "the app secret is wrong: check secret_env/secret_file against the WeChat console",
    ),
    (40002, "invalid grant_type: check the app's kind and grant"),
    (
        40013,
        "the appid is wrong: check appid (the corpid for wecom apps)",
    ),
    (
        40164,
        "add this server's IP to the IP whitelist of the WeChat console",
    ),
    (
        61004,
        "add this server's IP to the IP whitelist of the WeChat console",
    ),
    (
        60020,
        "add this server's IP to the trusted IPs of the WeCom app",
    ),
    (
        40243,
        "the app secret is frozen: unfreeze or reset it in the WeChat console",
    ),
    (41002, "appid missing: set appid"),
    (
        40083,
        "the suite_id is wrong: check suite_id against the app template in the WeCom provider console",
    ),
    (
        41004,
        "secret missing: set secret_env, secret_file or secret",
    ),
    (
        50004,
        "the API is forbidden for this account: check its status in the WeChat console",
    ),
    (
        50007,
        "the account is frozen: check its status in the WeChat console",
    ),
    (
        89501,
        "an administrator must confirm this IP in the WeChat console",
    ),
    (
        89503,
        "an administrator must confirm this IP in the WeChat console",
    ),
    (
        89506,
        "an administrator refused this IP: add it in the WeChat console",
    ),
    (
        89507,
        "an administrator refused this IP: wait one hour, then retry",
    ),
];

/// WeChat's "daily quota reached".
pub const QUOTA_ERRCODE: i64 = 45009;

/// Errcodes that get their own metric label; every other code is "other",
/// so a misbehaving upstream cannot grow the label set without bound.
const LABELLED_ERRCODES: &[&str] = &[
    "-1", "40001", "40002", "40013", "40014", "40125", "40164", "40243", "41002", "41004", "42001",
    "45009", "45011", "50004", "50007", "60020", "61004", "89501", "89503", "89506", "89507",
];

/// The `errcode` label of an answer that succeeded with a lifetime too
/// short to pace refreshes by (DESIGN.md section 17).
pub const SHORT_LIFETIME_LABEL: &str = "short_lifetime";

/// The labels of failures that carry no errcode; see `errcode_label`.
const UNCODED_LABELS: &[&str] = &[
    "timeout",
    "transport",
    "http",
    "malformed",
    "parent_token",
    SHORT_LIFETIME_LABEL,
    "other",
];

/// Every value [`FetchError::errcode_label`] can return.
pub fn errcode_labels() -> impl Iterator<Item = &'static str> {
    LABELLED_ERRCODES.iter().chain(UNCODED_LABELS).copied()
}

/// Every `result` label of `wxbroker_upstream_fetches_total`: "ok" and
/// the values of [`FetchError::result_label`].
pub const RESULT_LABELS: [&str; 3] = ["ok", "errcode", "transport"];

impl FetchError {
    pub fn class(&self) -> ErrorClass {
        match self {
            FetchError::Api { errcode, .. } if *errcode == QUOTA_ERRCODE => {
                ErrorClass::QuotaExhausted
            }
            FetchError::Api { errcode, .. } if config_fix(*errcode).is_some() => ErrorClass::Config,
            _ => ErrorClass::Retry,
        }
    }

    pub fn errcode(&self) -> Option<i64> {
        match self {
            FetchError::Api { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }

    /// The bounded `errcode` label for `wxbroker_upstream_errors_total`.
    pub fn errcode_label(&self) -> &'static str {
        match self {
            FetchError::Api { errcode, .. } => {
                let code = errcode.to_string();
                LABELLED_ERRCODES
                    .iter()
                    .find(|known| **known == code)
                    .copied()
                    .unwrap_or("other")
            }
            FetchError::Timeout(_) => "timeout",
            FetchError::Transport(_) => "transport",
            FetchError::Http(_) | FetchError::Redirect(_) => "http",
            FetchError::Malformed(_) => "malformed",
            FetchError::Parent(_) => "parent_token",
            FetchError::NoPushedTicket(_) => "no_verify_ticket",
        }
    }

    /// The `result` label for `wxbroker_upstream_fetches_total`.
    pub fn result_label(&self) -> &'static str {
        match self {
            FetchError::Api { .. } => "errcode",
            _ => "transport",
        }
    }

    /// What an operator should do, for configuration errors.
    pub fn fix(&self) -> Option<&'static str> {
        self.errcode().and_then(config_fix)
    }

    /// The broker's address, when WeChat refused it by name.
    pub fn blocked_ip(&self) -> Option<std::net::IpAddr> {
        match self {
            FetchError::Api { errcode, errmsg } => crate::errmsg::blocked_ip(*errcode, errmsg),
            _ => None,
        }
    }
}

fn config_fix(errcode: i64) -> Option<&'static str> {
    CONFIG_ERRCODES
        .iter()
        .find(|(code, _)| *code == errcode)
        .map(|(_, fix)| *fix)
}

/// Whether a token-consuming API's errcode means "this token is dead".
pub fn is_token_rejected(errcode: i64) -> bool {
    matches!(errcode, 40001 | 40014 | 42001)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_as_rule_five_says() {
        let api = |errcode| FetchError::Api {
            errcode,
            errmsg: String::new(),
        };
        // 40085 (a refused suite_ticket) waits for the next push; 42009
        // and 40082 (a dead suite token) for its refresher.
        for code in [-1, 45011, 12345, 40085, 42009, 40082] {
            assert_eq!(api(code).class(), ErrorClass::Retry, "{code}");
        }
        for code in [
            40001, 40125, 40002, 40013, 40164, 61004, 60020, 40243, 41002, 41004, 50004, 50007,
            89501, 89503, 89506, 89507, 40083,
        ] {
            assert_eq!(api(code).class(), ErrorClass::Config, "{code}");
            assert!(api(code).fix().is_some());
        }
        assert_eq!(api(45009).class(), ErrorClass::QuotaExhausted);
        assert_eq!(FetchError::Http(502).class(), ErrorClass::Retry);
        assert_eq!(
            FetchError::Timeout(Duration::from_secs(1)).class(),
            ErrorClass::Retry
        );
        assert_eq!(api(40164).errcode_label(), "40164");
        assert_eq!(api(99999).errcode_label(), "other");
    }
}
