//! The upstream protocol: how a token is asked of WeChat (classic
//! `/cgi-bin/token`, `/cgi-bin/stable_token`, WeCom `gettoken`), how the
//! answer is parsed, and the one place where a failure is classified into
//! what the refresher should do about it (DESIGN.md section 4, rule 5).

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;

use crate::config::{AppConfig, AppKind, Grant};
use crate::secret::{AccessToken, Secret};

/// A token as WeChat handed it out.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub token: AccessToken,
    pub expires_in: u64,
}

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

#[derive(Deserialize)]
struct CredentialAnswer {
    #[serde(default)]
    errcode: Option<i64>,
    #[serde(default)]
    errmsg: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    ticket: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Which field of an answer holds the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerField {
    AccessToken,
    Ticket,
}

/// The longest lifetime believed from upstream. WeChat grants 7200 s; a
/// larger figure is a broken or hostile answer, and taken at face value it
/// could overflow the expiry arithmetic or keep a dead token for days.
pub const MAX_LIFETIME_SECS: u64 = 86_400;

/// Parses a token endpoint's body. WeChat answers errors with HTTP 200, and
/// WeCom adds `"errcode":0` to successes, so the errcode decides. The
/// lifetime is clamped to [`MAX_LIFETIME_SECS`].
pub fn parse_token_answer(body: &[u8]) -> Result<TokenGrant, FetchError> {
    parse_answer(body, AnswerField::AccessToken)
}

/// Parses a credential endpoint's body: a token's, or a ticket's
/// (`{"errcode":0,"errmsg":"ok","ticket":..,"expires_in":7200}`).
pub fn parse_answer(body: &[u8], field: AnswerField) -> Result<TokenGrant, FetchError> {
    let answer: CredentialAnswer = serde_json::from_slice(body)
        .map_err(|err| FetchError::Malformed(format!("not a credential answer: {err}")))?;
    if let Some(errcode) = answer.errcode.filter(|code| *code != 0) {
        return Err(FetchError::Api {
            errcode,
            errmsg: answer.errmsg.unwrap_or_default(),
        });
    }
    let (value, name) = match field {
        AnswerField::AccessToken => (answer.access_token, "access_token"),
        AnswerField::Ticket => (answer.ticket, "ticket"),
    };
    match (value, answer.expires_in) {
        (Some(value), Some(expires_in)) if !value.is_empty() && expires_in > 0 => Ok(TokenGrant {
            token: AccessToken::new(value),
            expires_in: expires_in.min(MAX_LIFETIME_SECS),
        }),
        _ => Err(FetchError::Malformed(format!(
            "answer has no {name} or expires_in"
        ))),
    }
}

/// Anything that can hand out one credential. The refresher only sees
/// this, so its unit tests can drive it with a scripted fake.
pub trait TokenSource: Send + Sync + 'static {
    /// One upstream call. `force_refresh` matters to the stable grant only.
    fn fetch(&self, force_refresh: bool) -> BoxFuture<'_, Result<TokenGrant, FetchError>>;

    /// Waits until a fetch can be made: a credential fetched with another
    /// needs that one first. An error here means no upstream call was
    /// made, so none is counted against the budget.
    fn ready(&self) -> BoxFuture<'_, Result<(), FetchError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// How a held credential of this source is checked upstream, for the
    /// sources that have a cheap way (DESIGN.md section 21); `None` for
    /// the others.
    fn token_check(&self) -> Option<&dyn TokenCheck> {
        None
    }
}

/// A cheap upstream call that tells whether a token is still good: it
/// costs no credential quota (it has a quota of its own) and rotates
/// nothing.
pub trait TokenCheck: Send + Sync {
    /// `Ok` when upstream accepts `token`; an `Api` error with a token
    /// rejection ([`is_token_rejected`]) when it is dead; any other error
    /// when nothing can be told.
    fn check<'a>(&'a self, token: &'a AccessToken) -> BoxFuture<'a, Result<(), FetchError>>;
}

/// The HTTP client for credential fetches. It never follows a redirect
/// (a classic token URL carries the secret in its query and a
/// `stable_token` body carries it too: a 307 would send it on, and a 302
/// would leak it in `Referer`), and never sends a `Referer` at all.
pub fn upstream_client(
    upstream: &crate::config::UpstreamConfig,
) -> Result<reqwest::Client, crate::upstream::ClientError> {
    let builder = reqwest::Client::builder()
        .user_agent(concat!("wxbroker/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .referer(false);
    crate::upstream::build(builder, upstream)
}

/// The real upstream for one configured app.
pub struct WechatSource {
    http: reqwest::Client,
    kind: AppKind,
    grant: Grant,
    appid: String,
    secret: Secret,
    api_base: String,
    timeout: Duration,
}

impl WechatSource {
    pub fn new(http: reqwest::Client, app: &AppConfig) -> Self {
        WechatSource {
            http,
            kind: app.kind,
            grant: app.grant,
            appid: app.appid.clone(),
            secret: app.secret.clone(),
            api_base: app.api_base.clone(),
            timeout: app.fetch_timeout,
        }
    }

    fn request(&self, force_refresh: bool) -> reqwest::RequestBuilder {
        match (self.kind, self.grant) {
            (AppKind::Wecom, _) => self
                .http
                .get(format!("{}/cgi-bin/gettoken", self.api_base))
                .query(&[
                    ("corpid", &*self.appid),
                    ("corpsecret", self.secret.expose()),
                ]),
            (AppKind::Wechat, Grant::Classic) => self
                .http
                .get(format!("{}/cgi-bin/token", self.api_base))
                .query(&[
                    ("grant_type", "client_credential"),
                    ("appid", &*self.appid),
                    ("secret", self.secret.expose()),
                ]),
            (AppKind::Wechat, Grant::Stable) => self
                .http
                .post(format!("{}/cgi-bin/stable_token", self.api_base))
                .json(&serde_json::json!({
                    "grant_type": "client_credential",
                    "appid": self.appid,
                    "secret": self.secret.expose(),
                    "force_refresh": force_refresh,
                })),
        }
    }

    async fn call(&self, force_refresh: bool) -> Result<TokenGrant, FetchError> {
        exchange(
            self.request(force_refresh),
            AnswerField::AccessToken,
            self.timeout,
        )
        .await
    }
}

/// One credential call: sent, its redirect refused, its answer parsed,
/// all within `timeout`.
pub async fn exchange(
    request: reqwest::RequestBuilder,
    field: AnswerField,
    timeout: Duration,
) -> Result<TokenGrant, FetchError> {
    let exchange = async { parse_answer(&credential_body(request).await?, field) };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(FetchError::Timeout(timeout)))
}

/// Sends a credential call and reads its whole body: a redirect is refused
/// (never followed), any other status but success is an error, and
/// transport errors never quote the URL. Not bounded in time: the caller
/// bounds the whole exchange.
pub async fn credential_body(request: reqwest::RequestBuilder) -> Result<bytes::Bytes, FetchError> {
    let response = request.send().await.map_err(transport_error)?;
    let status = response.status();
    if status.is_redirection() {
        return Err(FetchError::Redirect(status.as_u16()));
    }
    let body = response.bytes().await.map_err(transport_error)?;
    if !status.is_success() {
        return Err(FetchError::Http(status.as_u16()));
    }
    Ok(body)
}

impl TokenSource for WechatSource {
    fn fetch(&self, force_refresh: bool) -> BoxFuture<'_, Result<TokenGrant, FetchError>> {
        Box::pin(self.call(force_refresh))
    }

    fn token_check(&self) -> Option<&dyn TokenCheck> {
        Some(self)
    }
}

/// `GET /cgi-bin/get_api_domain_ip?access_token=T`: WeChat and WeCom both
/// answer it for a valid app token, on a quota of its own, and answer
/// 40001, 40014 or 42001 for a dead one.
impl TokenCheck for WechatSource {
    fn check<'a>(&'a self, token: &'a AccessToken) -> BoxFuture<'a, Result<(), FetchError>> {
        Box::pin(async move {
            let request = self
                .http
                .get(format!("{}/cgi-bin/get_api_domain_ip", self.api_base))
                .query(&[("access_token", token.expose())]);
            let exchange = async { check_answer(&credential_body(request).await?) };
            tokio::time::timeout(self.timeout, exchange)
                .await
                .unwrap_or(Err(FetchError::Timeout(self.timeout)))
        })
    }
}

/// A check's answer: an errcode other than 0 is the verdict; anything
/// that is not a JSON object tells nothing.
fn check_answer(body: &[u8]) -> Result<(), FetchError> {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(default)]
        errcode: Option<i64>,
        #[serde(default)]
        errmsg: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|err| FetchError::Malformed(format!("not a JSON answer: {err}")))?;
    match answer.errcode.filter(|code| *code != 0) {
        Some(errcode) => Err(FetchError::Api {
            errcode,
            errmsg: answer.errmsg.unwrap_or_default(),
        }),
        None => Ok(()),
    }
}

/// reqwest errors quote the URL, and a classic token URL carries the secret
/// in its query, so the URL is stripped before the error goes anywhere.
fn transport_error(err: reqwest::Error) -> FetchError {
    FetchError::Transport(describe_without_url(err))
}

/// A reqwest error and its causes in one line, without the URL: a
/// credential call's URL carries a secret or a token in its query.
pub fn describe_without_url(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_success_and_wecom_success() {
        let grant = parse_token_answer(br#"{"access_token":"abc","expires_in":7200}"#).unwrap();
        assert_eq!((grant.token.expose(), grant.expires_in), ("abc", 7200));
        let grant = parse_token_answer(
            br#"{"errcode":0,"errmsg":"ok","access_token":"w","expires_in":7000}"#,
        )
        .unwrap();
        assert_eq!(grant.expires_in, 7000);
    }

    #[test]
    fn parses_errors_and_garbage() {
        let err = parse_token_answer(br#"{"errcode":40013,"errmsg":"invalid appid"}"#).unwrap_err();
        assert_eq!(err.errcode(), Some(40013));
        assert!(matches!(
            parse_token_answer(b"<html>500</html>"),
            Err(FetchError::Malformed(_))
        ));
        assert!(matches!(
            parse_token_answer(br#"{"expires_in":7200}"#),
            Err(FetchError::Malformed(_))
        ));
        // A ticket answer is not a token answer, nor the other way round.
        let ticket = br#"{"errcode":0,"errmsg":"ok","ticket":"t1","expires_in":7200}"#;
        assert!(parse_token_answer(ticket).is_err());
        let grant = parse_answer(ticket, AnswerField::Ticket).unwrap();
        assert_eq!((grant.token.expose(), grant.expires_in), ("t1", 7200));
    }

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
