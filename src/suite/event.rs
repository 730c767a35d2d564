//! The decrypted push of a suite (WeCom's 指令回调): one flat `<xml>` of
//! `SuiteId`, `InfoType`, `TimeStamp` and the fields of its kind, read
//! into a [`SuiteEvent`]. A push of a kind the broker does not act on is
//! [`SuiteEvent::Other`], answered `success` like the rest; a push of a
//! kind it acts on but without the field it needs is refused.

use crate::platform::message;
use crate::secret::Secret;

/// What a push tells the broker. Tickets and codes are [`Secret`]s: a
/// stray `{:?}` shows none of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuiteEvent {
    /// `suite_ticket`: WeCom's newest ticket, stamped with the time it was
    /// issued (pushes may arrive out of order; see [`super::ticket`]).
    SuiteTicket { ticket: Secret, timestamp: u64 },
    /// `create_auth`: a corp installed the app; `auth_code` (10 minutes,
    /// one use) is exchanged for the permanent code.
    CreateAuth { auth_code: Secret },
    /// `change_auth`: the corp changed what the app may do; re-read with
    /// `get_auth_info`.
    ChangeAuth { auth_corpid: String },
    /// `cancel_auth`: the corp removed the app; its permanent code is dead.
    CancelAuth { auth_corpid: String },
    /// `reset_permanent_code` (代开发): the corp reset the app's secret;
    /// `auth_code` is exchanged for the new permanent code.
    ResetPermanentCode { auth_code: Secret },
    /// Any other `InfoType` (contact changes, tickets of other products):
    /// accepted and ignored.
    Other { info_type: String },
}

/// Why a decrypted message is not a push this suite acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the decrypted message is not a push")]
    Malformed,
    #[error("the push names another suite")]
    OtherSuite,
}

impl SuiteEvent {
    /// Reads the decrypted `plain` text of a push to `suite_id`.
    pub fn parse(plain: &[u8], suite_id: &str) -> Result<SuiteEvent, EventError> {
        let fields = message::parse(plain).map_err(|_| EventError::Malformed)?;
        // WeCom's samples indent values inside their CDATA sections.
        let field = |name: &str| fields.get(name).map(str::trim).filter(|v| !v.is_empty());
        if field("SuiteId").is_some_and(|id| id != suite_id) {
            return Err(EventError::OtherSuite);
        }
        let required = |name: &str| field(name).ok_or(EventError::Malformed);
        let event = match required("InfoType")? {
            "suite_ticket" => SuiteEvent::SuiteTicket {
                ticket: Secret::new(required("SuiteTicket")?),
                timestamp: required("TimeStamp")?
                    .parse()
                    .map_err(|_| EventError::Malformed)?,
            },
            "create_auth" => SuiteEvent::CreateAuth {
                auth_code: Secret::new(required("AuthCode")?),
            },
            "change_auth" => SuiteEvent::ChangeAuth {
                auth_corpid: required("AuthCorpId")?.to_owned(),
            },
            "cancel_auth" => SuiteEvent::CancelAuth {
                auth_corpid: required("AuthCorpId")?.to_owned(),
            },
            "reset_permanent_code" => SuiteEvent::ResetPermanentCode {
                auth_code: Secret::new(required("AuthCode")?),
            },
            other => SuiteEvent::Other {
                info_type: other.to_owned(),
            },
        };
        Ok(event)
    }

    /// The event's `InfoType`, for logs and metric labels (bounded: any
    /// kind the broker does not act on is `other`).
    pub fn label(&self) -> &'static str {
        match self {
            SuiteEvent::SuiteTicket { .. } => "suite_ticket",
            SuiteEvent::CreateAuth { .. } => "create_auth",
            SuiteEvent::ChangeAuth { .. } => "change_auth",
            SuiteEvent::CancelAuth { .. } => "cancel_auth",
            SuiteEvent::ResetPermanentCode { .. } => "reset_permanent_code",
            SuiteEvent::Other { .. } => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUITE: &str = "wwsuite0001";

    fn parse(xml: &str) -> Result<SuiteEvent, EventError> {
        SuiteEvent::parse(xml.as_bytes(), SUITE)
    }

    #[test]
    fn reads_every_kind_as_wecom_documents_it() {
        // WeCom's own sample, with its indented CDATA.
        let ticket = parse(
            "<xml><SuiteId><![CDATA[wwsuite0001]]></SuiteId>\n<InfoType> <![CDATA[suite_ticket]]></InfoType>\n<TimeStamp>1403610513</TimeStamp>\n<SuiteTicket><![CDATA[asdfasfdasdfasdf]]></SuiteTicket></xml>",
        )
        .unwrap();
        assert_eq!(
            ticket,
            SuiteEvent::SuiteTicket {
                ticket: Secret::new("asdfasfdasdfasdf"),
                timestamp: 1403610513
            }
        );
        assert!(!format!("{ticket:?}").contains("asdfasfdasdfasdf"));
        assert_eq!(
            parse("<xml><SuiteId>wwsuite0001</SuiteId><AuthCode>AUTHCODE</AuthCode><InfoType>create_auth</InfoType><TimeStamp>1</TimeStamp><State>123</State></xml>").unwrap(),
            SuiteEvent::CreateAuth { auth_code: Secret::new("AUTHCODE") }
        );
        assert_eq!(
            parse("<xml><SuiteId>wwsuite0001</SuiteId><InfoType>change_auth</InfoType><TimeStamp>1</TimeStamp><AuthCorpId>wwcorp1</AuthCorpId></xml>").unwrap(),
            SuiteEvent::ChangeAuth { auth_corpid: "wwcorp1".into() }
        );
        assert_eq!(
            parse("<xml><SuiteId>wwsuite0001</SuiteId><InfoType>cancel_auth</InfoType><TimeStamp>1</TimeStamp><AuthCorpId>wwcorp1</AuthCorpId></xml>").unwrap(),
            SuiteEvent::CancelAuth { auth_corpid: "wwcorp1".into() }
        );
        assert_eq!(
            parse("<xml><SuiteId>wwsuite0001</SuiteId><AuthCode>NEWCODE</AuthCode><InfoType>reset_permanent_code</InfoType><TimeStamp>1</TimeStamp></xml>").unwrap(),
            SuiteEvent::ResetPermanentCode { auth_code: Secret::new("NEWCODE") }
        );
        let other = parse("<xml><SuiteId>wwsuite0001</SuiteId><InfoType>change_contact</InfoType><AuthCorpId>wwcorp1</AuthCorpId></xml>").unwrap();
        assert_eq!(
            other,
            SuiteEvent::Other {
                info_type: "change_contact".into()
            }
        );
        assert_eq!(other.label(), "other");
    }

    #[test]
    fn refuses_incomplete_foreign_or_malformed_pushes() {
        for xml in [
            "<xml><SuiteId>wwsuite0001</SuiteId><InfoType>suite_ticket</InfoType><TimeStamp>1</TimeStamp></xml>",
            "<xml><SuiteId>wwsuite0001</SuiteId><InfoType>suite_ticket</InfoType><SuiteTicket>t</SuiteTicket></xml>",
            "<xml><SuiteId>wwsuite0001</SuiteId><InfoType>suite_ticket</InfoType><SuiteTicket>t</SuiteTicket><TimeStamp>-5</TimeStamp></xml>",
            "<xml><SuiteId>wwsuite0001</SuiteId><InfoType>create_auth</InfoType><AuthCode> </AuthCode></xml>",
            "<xml><SuiteId>wwsuite0001</SuiteId><InfoType>cancel_auth</InfoType></xml>",
            "<xml><SuiteId>wwsuite0001</SuiteId></xml>",
            "<xml><InfoType><Nested>x</Nested></InfoType></xml>",
            "not xml at all",
        ] {
            assert_eq!(parse(xml), Err(EventError::Malformed), "{xml}");
        }
        assert_eq!(
            parse("<xml><SuiteId>wwsomeoneelse</SuiteId><InfoType>suite_ticket</InfoType><SuiteTicket>t</SuiteTicket><TimeStamp>1</TimeStamp></xml>"),
            Err(EventError::OtherSuite)
        );
    }
}
