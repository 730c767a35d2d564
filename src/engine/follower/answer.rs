//! What a leader answers, and the check of it before anything is served:
//! the app, appid, grant and credential it names, a plausible value and
//! a lifetime. A failed check is a [`Refused`], with its cause.

use serde::Deserialize;

use super::Follower;
use crate::credential::Credential;
use crate::engine::CredentialRecord;
use crate::secret::AccessToken;

/// WeChat's credentials are a few hundred characters at most.
const MAX_VALUE: usize = 2048;
/// Lifetimes are clamped like WeChat's own (DESIGN.md section 17).
const MAX_LIFETIME_SECS: u64 = 86_400;

/// Why an exchange with the leader brought nothing to serve. Never holds
/// a credential: it is logged and shown in `/v1/apps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refused(pub(super) String);

/// The leader's answer, as the remote listener sends it. The value is
/// in the field its credential names ([`Credential::answer_field`]).
#[derive(Deserialize)]
pub(super) struct LeaderAnswer {
    app: String,
    appid: String,
    grant: String,
    credential: String,
    expires_in: u64,
    pub(super) outcome: Option<String>,
    #[serde(flatten)]
    fields: serde_json::Map<String, serde_json::Value>,
}

impl LeaderAnswer {
    /// The value `credential` is answered in, if the answer holds one.
    fn value(&self, credential: Credential) -> Option<AccessToken> {
        match self.fields.get(credential.answer_field())? {
            serde_json::Value::String(value) => Some(AccessToken::new(value.as_str())),
            _ => None,
        }
    }
}

impl Follower {
    /// What the leader sent, if it may be served: the app, appid, grant
    /// and credential this follower stands for, a plausible value and a
    /// lifetime, counted from now (the two hosts' clocks may differ).
    pub(super) fn check(
        &self,
        answer: Result<LeaderAnswer, Refused>,
    ) -> Result<CredentialRecord, Refused> {
        let answer = answer?;
        let refuse = |why: String| Err(Refused(why));
        if answer.app != self.spec.name {
            return refuse(format!(
                "the leader answered for app \"{}\"",
                shown(&answer.app)
            ));
        }
        if answer.appid != self.spec.key.appid {
            return refuse(format!(
                "the leader answered for appid \"{}\", not {}",
                shown(&answer.appid),
                self.spec.key.appid
            ));
        }
        let grant = self.spec.grant;
        if answer.grant != grant {
            return refuse(format!(
                "the leader's app has grant \"{}\", this one {grant}",
                shown(&answer.grant)
            ));
        }
        if answer.credential != self.credential.label() {
            return refuse(format!(
                "the leader answered with a {}, not a {}",
                shown(&answer.credential),
                self.credential
            ));
        }
        let Some(value) = answer.value(self.credential) else {
            return refuse(format!("the leader's answer holds no {}", self.credential));
        };
        let plausible = (1..=MAX_VALUE).contains(&value.expose().len())
            && value.expose().bytes().all(|b| b.is_ascii_graphic());
        if !plausible {
            return refuse(format!(
                "the leader's {} is not plausible (empty, too long, or not printable ASCII)",
                self.credential
            ));
        }
        if answer.expires_in == 0 {
            return refuse(format!("the leader's {} has expired", self.credential));
        }
        let now = self.writer.handle().now_ms();
        Ok(CredentialRecord {
            value,
            expires_at_ms: now.saturating_add(answer.expires_in.min(MAX_LIFETIME_SECS) * 1000),
            fetched_at_ms: now,
        })
    }
}

/// A string the leader sent, cut short and made printable for a log line.
pub(super) fn shown(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
