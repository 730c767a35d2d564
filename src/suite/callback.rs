//! WeCom's calls to a suite's callback URL
//! (`/wechat/suites/{name}/callback?msg_signature=&timestamp=&nonce=`),
//! checked as pure functions of the query, the body and the time:
//!
//! - `GET …&echostr=E`, WeCom's URL check: the signature over (token,
//!   timestamp, nonce, E), the 5-minute window, then E decrypted; the
//!   plaintext is the answer.
//! - `POST` with `<xml><ToUserName/><Encrypt/><AgentID/></xml>`: the same
//!   checks over the `Encrypt` element, at most 64 KiB, then the
//!   decrypted push read into a [`SuiteEvent`].
//!
//! The receive id at the end of a decrypted message must be the suite id
//! or the provider's corpid: WeCom uses both. Every refusal says only
//! which check failed; none carries the query, body or plaintext.

use super::event::{EventError, SuiteEvent};
use crate::config::SuiteConfig;
use crate::platform::crypto::{CryptError, MessageCrypt};
use crate::platform::message;
use crate::secret::Secret;

/// The most a push may weigh; WeCom's are a few hundred bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A call stamped further than this from the broker's clock is refused:
/// a replayed push is as good as a forged one.
pub const TIMESTAMP_WINDOW_SECS: u64 = 300;

/// An `echostr` is the ciphertext of a short random string.
const ECHOSTR_LIMIT: usize = 4096;

/// Why a call was refused (a 403, and nothing changes). The label is the
/// metric's `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("missing, repeated or malformed query parameters")]
    Query,
    #[error("timestamp outside the accepted window")]
    Stale,
    #[error("body larger than 64 KiB")]
    TooLarge,
    #[error("the body is not a push envelope")]
    Envelope,
    #[error(transparent)]
    Crypt(#[from] CryptError),
    #[error("the decrypted message is not a push")]
    Message,
    #[error("the push names another suite")]
    OtherSuite,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Query => "query",
            Refusal::Stale => "stale",
            Refusal::TooLarge => "too_large",
            Refusal::Envelope => "envelope",
            Refusal::Crypt(err) => err.label(),
            Refusal::Message => "message",
            Refusal::OtherSuite => "other_suite",
        }
    }
}

impl From<EventError> for Refusal {
    fn from(err: EventError) -> Self {
        match err {
            EventError::Malformed => Refusal::Message,
            EventError::OtherSuite => Refusal::OtherSuite,
        }
    }
}

/// The callback checks of one suite: its token, EncodingAESKey, suite id
/// and provider corpid.
#[derive(Debug)]
pub struct SuiteCallback {
    crypt: MessageCrypt,
    suite_id: String,
}

/// The signed parameters every call carries.
struct Signed<'a> {
    signature: &'a str,
    timestamp: &'a str,
    nonce: &'a str,
}

impl SuiteCallback {
    /// `None` when `aes_key` is not 43 base64 characters (configuration
    /// validation refuses those first).
    pub fn new(
        token: Secret,
        aes_key: &str,
        suite_id: &str,
        provider_corpid: &str,
    ) -> Option<Self> {
        Some(SuiteCallback {
            crypt: MessageCrypt::accepting(token, aes_key, &[suite_id, provider_corpid])?,
            suite_id: suite_id.to_owned(),
        })
    }

    /// The checks of a configured suite.
    pub fn for_suite(config: &SuiteConfig) -> Self {
        SuiteCallback::new(
            config.token.clone(),
            config.aes_key.expose(),
            &config.suite_id,
            &config.provider_corpid,
        )
        .expect("validated: a 43-character EncodingAESKey")
    }

    /// WeCom's URL check (`GET` with `echostr`): the plaintext to answer.
    pub fn verify_url(&self, query: Option<&str>, now_secs: u64) -> Result<String, Refusal> {
        let params = Params::parse(query)?;
        let signed = params.signed()?;
        // Form decoding turns a `+` WeCom left unencoded into a space;
        // base64 has no spaces, so a space can only have been a `+`.
        let echostr = params.one("echostr")?.replace(' ', "+");
        if echostr.len() > ECHOSTR_LIMIT {
            return Err(Refusal::Query);
        }
        self.check(&signed, &echostr, now_secs)?;
        let plain = self.crypt.decrypt(&echostr)?;
        String::from_utf8(plain).map_err(|_| Refusal::Message)
    }

    /// A pushed message (`POST`): checked, decrypted and read.
    pub fn open_push(
        &self,
        query: Option<&str>,
        body: &[u8],
        now_secs: u64,
    ) -> Result<SuiteEvent, Refusal> {
        if body.len() > BODY_LIMIT {
            return Err(Refusal::TooLarge);
        }
        let params = Params::parse(query)?;
        let signed = params.signed()?;
        let envelope = message::parse(body).map_err(|_| Refusal::Envelope)?;
        let encrypt = envelope
            .get("Encrypt")
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .ok_or(Refusal::Envelope)?;
        self.check(&signed, encrypt, now_secs)?;
        let plain = self.crypt.decrypt(encrypt)?;
        Ok(SuiteEvent::parse(&plain, &self.suite_id)?)
    }

    /// The window first (cheap), then the signature over `encrypt`.
    fn check(&self, signed: &Signed<'_>, encrypt: &str, now_secs: u64) -> Result<(), Refusal> {
        let sent: u64 = signed.timestamp.parse().map_err(|_| Refusal::Query)?;
        if sent.abs_diff(now_secs) > TIMESTAMP_WINDOW_SECS {
            return Err(Refusal::Stale);
        }
        if !self
            .crypt
            .verify(signed.timestamp, signed.nonce, encrypt, signed.signature)
        {
            return Err(CryptError::Signature.into());
        }
        Ok(())
    }
}

/// The decoded query. A parameter given twice is refused: which copy
/// was signed would be a guess.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>) -> Result<Params, Refusal> {
        let query = query.unwrap_or("");
        if query.len() > ECHOSTR_LIMIT * 2 {
            return Err(Refusal::Query);
        }
        Ok(Params(
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        ))
    }

    fn one(&self, name: &str) -> Result<&str, Refusal> {
        let mut values = self.0.iter().filter(|(key, _)| key == name);
        match (values.next(), values.next()) {
            (Some((_, value)), None) if !value.is_empty() => Ok(value),
            _ => Err(Refusal::Query),
        }
    }

    fn signed(&self) -> Result<Signed<'_>, Refusal> {
        Ok(Signed {
            signature: self.one("msg_signature")?,
            timestamp: self.one("timestamp")?,
            nonce: self.one("nonce")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::crypto::signature;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const TOKEN: &str = "suite-callback-token";
    const SUITE: &str = "wwsuite0001";
    const PROVIDER: &str = "wwprovider01";
    const NOW: u64 = 1_800_000_000;

    fn callback() -> SuiteCallback {
        SuiteCallback::new(Secret::new(TOKEN), KEY, SUITE, PROVIDER).unwrap()
    }

    /// Seals `message` for `receive_id` with the broker's own codec (the
    /// simulator's, a separate implementation, is checked against this
    /// one below).
    fn sealed(message: &str, receive_id: &str) -> String {
        MessageCrypt::new(Secret::new(TOKEN), KEY, receive_id)
            .unwrap()
            .encrypt(message.as_bytes(), [3; 16])
    }

    fn query(encrypt: &str, timestamp: u64, extra: &str) -> String {
        let ts = timestamp.to_string();
        let sig = signature(TOKEN, &ts, "nonce1", encrypt);
        format!("msg_signature={sig}&timestamp={ts}&nonce=nonce1{extra}")
    }

    fn push(encrypt: &str) -> String {
        format!("<xml><ToUserName><![CDATA[{SUITE}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>")
    }

    fn ticket_xml(ticket: &str) -> String {
        format!("<xml><SuiteId><![CDATA[{SUITE}]]></SuiteId><InfoType><![CDATA[suite_ticket]]></InfoType><TimeStamp>{NOW}</TimeStamp><SuiteTicket><![CDATA[{ticket}]]></SuiteTicket></xml>")
    }

    fn echo_query(echostr: &str, timestamp: u64) -> String {
        let encoded: String = url::form_urlencoded::byte_serialize(echostr.as_bytes()).collect();
        query(echostr, timestamp, &format!("&echostr={encoded}"))
    }

    #[test]
    fn the_url_check_answers_the_plaintext_for_either_receive_id() {
        for receive_id in [SUITE, PROVIDER] {
            let echostr = sealed("5927782489442352469", receive_id);
            let answer = callback().verify_url(Some(&echo_query(&echostr, NOW)), NOW);
            assert_eq!(answer.unwrap(), "5927782489442352469");
        }
        // A `+` left unencoded arrives as a space and is read back.
        let echostr = (0..64)
            .map(|i| sealed(&format!("echo{i}"), SUITE))
            .find(|e| e.contains('+'))
            .expect("some ciphertext has a +");
        let raw = query(&echostr, NOW, &format!("&echostr={echostr}"));
        assert!(callback().verify_url(Some(&raw), NOW).is_ok());
    }

    #[test]
    fn the_url_check_refuses_forged_stale_foreign_and_malformed_calls() {
        let echostr = sealed("12345", SUITE);
        let good = echo_query(&echostr, NOW);
        let cb = callback();
        let forged = good.replace("nonce=nonce1", "nonce=nonce2");
        assert_eq!(
            cb.verify_url(Some(&forged), NOW),
            Err(Refusal::Crypt(CryptError::Signature))
        );
        assert_eq!(cb.verify_url(Some(&good), NOW + 301), Err(Refusal::Stale));
        assert_eq!(cb.verify_url(Some(&good), NOW - 301), Err(Refusal::Stale));
        assert!(cb.verify_url(Some(&good), NOW + 300).is_ok());
        let foreign = sealed("12345", "wwsomeoneelse");
        assert_eq!(
            cb.verify_url(Some(&echo_query(&foreign, NOW)), NOW),
            Err(Refusal::Crypt(CryptError::AppId))
        );
        for bad in [
            None,
            Some(""),
            Some("timestamp=1&nonce=2"),
            Some(&*good.replace("echostr=", "x=")),
            Some(&*format!("{good}&nonce=nonce1")),
        ] {
            assert_eq!(cb.verify_url(bad, NOW), Err(Refusal::Query), "{bad:?}");
        }
        let huge = "A".repeat(ECHOSTR_LIMIT + 4);
        assert_eq!(
            cb.verify_url(Some(&echo_query(&huge, NOW)), NOW),
            Err(Refusal::Query)
        );
    }

    #[test]
    fn a_push_is_checked_decrypted_and_read() {
        let cb = callback();
        for receive_id in [SUITE, PROVIDER] {
            let encrypt = sealed(&ticket_xml("ticket-1"), receive_id);
            let event = cb
                .open_push(
                    Some(&query(&encrypt, NOW, "")),
                    push(&encrypt).as_bytes(),
                    NOW,
                )
                .unwrap();
            assert_eq!(
                event,
                SuiteEvent::SuiteTicket {
                    ticket: Secret::new("ticket-1"),
                    timestamp: NOW
                }
            );
        }
    }

    #[test]
    fn every_failed_check_of_a_push_is_refused() {
        let cb = callback();
        let encrypt = sealed(&ticket_xml("ticket-1"), SUITE);
        let body = push(&encrypt);
        let good = query(&encrypt, NOW, "");
        assert!(cb.open_push(Some(&good), body.as_bytes(), NOW).is_ok());
        assert_eq!(
            cb.open_push(Some(&good), body.as_bytes(), NOW + 400),
            Err(Refusal::Stale)
        );
        let other_token = signature("another-token", &NOW.to_string(), "nonce1", &encrypt);
        let forged = format!("msg_signature={other_token}&timestamp={NOW}&nonce=nonce1");
        assert_eq!(
            cb.open_push(Some(&forged), body.as_bytes(), NOW),
            Err(Refusal::Crypt(CryptError::Signature))
        );
        assert_eq!(
            cb.open_push(Some(&good), b"<xml><ToUserName>x</ToUserName></xml>", NOW),
            Err(Refusal::Envelope)
        );
        assert_eq!(
            cb.open_push(Some(&good), b"{\"Encrypt\":1}", NOW),
            Err(Refusal::Envelope)
        );
        assert_eq!(
            cb.open_push(None, body.as_bytes(), NOW),
            Err(Refusal::Query)
        );
        let mut heavy = body.clone().into_bytes();
        heavy.resize(BODY_LIMIT + 1, b' ');
        assert_eq!(
            cb.open_push(Some(&good), &heavy, NOW),
            Err(Refusal::TooLarge)
        );
        // Signed and sealed with the right key, but for someone else.
        let foreign = sealed(&ticket_xml("ticket-1"), "wwsomeoneelse");
        assert_eq!(
            cb.open_push(
                Some(&query(&foreign, NOW, "")),
                push(&foreign).as_bytes(),
                NOW
            ),
            Err(Refusal::Crypt(CryptError::AppId))
        );
        // For this provider, but naming another of its suites.
        let other_suite = sealed(&ticket_xml("t").replace(SUITE, "wwsuite0002"), PROVIDER);
        assert_eq!(
            cb.open_push(
                Some(&query(&other_suite, NOW, "")),
                push(&other_suite).as_bytes(),
                NOW
            ),
            Err(Refusal::OtherSuite)
        );
        let not_a_push = sealed("hello", SUITE);
        assert_eq!(
            cb.open_push(
                Some(&query(&not_a_push, NOW, "")),
                push(&not_a_push).as_bytes(),
                NOW
            ),
            Err(Refusal::Message)
        );
        assert_eq!(Refusal::TooLarge.label(), "too_large");
        assert_eq!(Refusal::Crypt(CryptError::AppId).label(), "appid");
    }

    /// The simulator seals with a codec of its own; the broker's must
    /// open what it seals, for either receive id, and refuse it once
    /// tampered with.
    #[test]
    fn the_simulators_independent_codec_and_this_one_agree() {
        use crate::simulator::{suite_ticket_xml, ReceiveId, SimConfig, SimSuite, Simulator};
        let sim = Simulator::new(SimConfig::default());
        sim.add_suite(SimSuite {
            suite_id: SUITE.into(),
            suite_secret: "suite-secret".into(),
            token: TOKEN.into(),
            aes_key: KEY.into(),
            provider_corpid: PROVIDER.into(),
            provider_secret: None,
            customized: false,
        });
        let cb = callback();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        for receive in [ReceiveId::SuiteId, ReceiveId::ProviderCorpId] {
            for len in [1, 15, 16, 17, 31, 32, 33, 200] {
                let ticket = "t".repeat(len);
                let push = sim
                    .seal_suite_push(SUITE, &suite_ticket_xml(SUITE, &ticket, 42), receive)
                    .unwrap();
                let event = cb
                    .open_push(Some(&push.query), push.body.as_bytes(), now)
                    .unwrap();
                assert_eq!(
                    event,
                    SuiteEvent::SuiteTicket {
                        ticket: Secret::new(ticket),
                        timestamp: 42
                    }
                );
                let tampered = push
                    .body
                    .replacen("<Encrypt><![CDATA[", "<Encrypt><![CDATA[A", 1);
                assert!(cb
                    .open_push(Some(&push.query), tampered.as_bytes(), now)
                    .is_err());
            }
            let check = sim.suite_url_check(SUITE, receive).unwrap();
            assert_eq!(
                cb.verify_url(Some(&check.query), now).unwrap(),
                check.plaintext
            );
        }
        let stale = sim
            .seal_suite_push_at(
                SUITE,
                &suite_ticket_xml(SUITE, "t", 1),
                ReceiveId::SuiteId,
                now - 600,
            )
            .unwrap();
        assert_eq!(
            cb.open_push(Some(&stale.query), stale.body.as_bytes(), now),
            Err(Refusal::Stale)
        );
    }
}
