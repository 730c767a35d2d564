//! What WeCom sends to a suite's callback URL: the event XML of each
//! push (as WeCom's documentation shows it), the envelope
//! `<xml><ToUserName/><Encrypt/><AgentID/></xml>` with its signed query
//! `msg_signature=&timestamp=&nonce=`, and the GET URL check with its
//! encrypted `echostr`.

use rand::Rng;

use super::super::open_platform::Push;
use super::super::push_crypto::{self, random};
use super::{Event, Suite, UrlCheck};

/// A `suite_ticket` push's event XML, for tests that seal their own.
pub fn suite_ticket_xml(suite_id: &str, ticket: &str, timestamp: u64) -> String {
    event_xml(suite_id, &Event::Ticket { ticket, timestamp }, timestamp)
}

/// The event XML of `event`, stamped `unix` unless it carries its own
/// `TimeStamp`.
pub(super) fn event_xml(suite_id: &str, event: &Event<'_>, unix: u64) -> String {
    let head = format!("<xml><SuiteId><![CDATA[{suite_id}]]></SuiteId>");
    let body = match event {
        Event::Ticket { ticket, timestamp } => format!(
            "<InfoType><![CDATA[suite_ticket]]></InfoType><TimeStamp>{timestamp}</TimeStamp><SuiteTicket><![CDATA[{ticket}]]></SuiteTicket>"
        ),
        Event::CreateAuth { auth_code } => format!(
            "<AuthCode><![CDATA[{auth_code}]]></AuthCode><InfoType><![CDATA[create_auth]]></InfoType><TimeStamp>{unix}</TimeStamp><State><![CDATA[]]></State>"
        ),
        Event::ChangeAuth { corpid } => format!(
            "<InfoType><![CDATA[change_auth]]></InfoType><TimeStamp>{unix}</TimeStamp><AuthCorpId><![CDATA[{corpid}]]></AuthCorpId><State><![CDATA[]]></State>"
        ),
        Event::CancelAuth { corpid } => format!(
            "<InfoType><![CDATA[cancel_auth]]></InfoType><TimeStamp>{unix}</TimeStamp><AuthCorpId><![CDATA[{corpid}]]></AuthCorpId>"
        ),
        Event::ResetPermanentCode { auth_code } => format!(
            "<AuthCode><![CDATA[{auth_code}]]></AuthCode><InfoType><![CDATA[reset_permanent_code]]></InfoType><TimeStamp>{unix}</TimeStamp>"
        ),
    };
    format!("{head}{body}</xml>")
}

/// `inner` sealed for `receive_id` and signed with the query stamped
/// `timestamp`.
pub(super) fn push(suite: &Suite, receive_id: &str, inner: &str, timestamp: u64) -> Push {
    let encrypt = push_crypto::encrypt(&suite.key, receive_id, inner);
    let query = signed_query(suite, &encrypt, timestamp);
    Push {
        query,
        body: format!(
            "<xml><ToUserName><![CDATA[{receive_id}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>"
        ),
    }
}

/// The URL check: a random number sealed for `receive_id` as `echostr`,
/// signed together with it.
pub(super) fn url_check(suite: &Suite, receive_id: &str, timestamp: u64) -> UrlCheck {
    let plaintext = rand::thread_rng()
        .gen_range(1_000_000_000_000_000u64..u64::MAX)
        .to_string();
    let echostr = push_crypto::encrypt(&suite.key, receive_id, &plaintext);
    let query = signed_query(suite, &echostr, timestamp);
    UrlCheck {
        query: format!("{query}&echostr={}", push_crypto::query_value(&echostr)),
        plaintext,
    }
}

fn signed_query(suite: &Suite, encrypt: &str, timestamp: u64) -> String {
    let timestamp = timestamp.to_string();
    let nonce = random(10);
    let signature = push_crypto::signature(&suite.spec.token, &timestamp, &nonce, encrypt);
    format!("msg_signature={signature}&timestamp={timestamp}&nonce={nonce}")
}
