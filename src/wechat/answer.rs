//! Upstream's answers, parsed: a credential endpoint's (a token's or a
//! ticket's, its lifetime clamped) and a token check's. WeChat answers
//! errors with HTTP 200, so the errcode decides.

use serde::Deserialize;

use super::fetch_error::FetchError;
use crate::secret::AccessToken;

/// A token as WeChat handed it out.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub token: AccessToken,
    pub expires_in: u64,
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

/// A check's answer: an errcode other than 0 is the verdict; anything
/// that is not a JSON object tells nothing.
pub(super) fn check_answer(body: &[u8]) -> Result<(), FetchError> {
    #[derive(Deserialize)]
    struct CheckAnswer {
        #[serde(default)]
        errcode: Option<i64>,
        #[serde(default)]
        errmsg: Option<String>,
    }
    let answer: CheckAnswer = serde_json::from_slice(body)
        .map_err(|err| FetchError::Malformed(format!("not a JSON answer: {err}")))?;
    match answer.errcode.filter(|code| *code != 0) {
        Some(errcode) => Err(FetchError::Api {
            errcode,
            errmsg: answer.errmsg.unwrap_or_default(),
        }),
        None => Ok(()),
    }
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
}
