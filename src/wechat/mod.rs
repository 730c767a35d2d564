//! The upstream protocol: how a credential is asked of WeChat (classic
//! `/cgi-bin/token`, `/cgi-bin/stable_token`, WeCom `gettoken`), how the
//! answer is parsed, and the one place where a failure is classified into
//! what the refresher should do about it (DESIGN.md section 4, rule 5).
//!
//! - [`source`](TokenSource): what the engine sees of upstream, a
//!   credential's source and a token's check;
//! - [`answer`](parse_answer): the answers parsed;
//! - [`fetch_error`](FetchError): why a call failed, and its class;
//! - [`http`](exchange): one credential call over HTTP;
//! - [`WechatSource`]: the real upstream of one configured app.

mod answer;
mod app_source;
mod fetch_error;
mod http;
mod source;

pub use answer::{parse_answer, parse_token_answer, AnswerField, TokenGrant, MAX_LIFETIME_SECS};
pub use app_source::WechatSource;
pub use fetch_error::{
    errcode_labels, is_token_rejected, ErrorClass, FetchError, QUOTA_ERRCODE, RESULT_LABELS,
    SHORT_LIFETIME_LABEL,
};
pub use http::{credential_body, describe_without_url, exchange, upstream_client};
pub use source::{TokenCheck, TokenSource};
