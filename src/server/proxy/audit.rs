//! What the call audit is told of a forwarded call: who asked, the path
//! made safe to keep, and how the call ended, read from the answer the
//! proxy relayed or from the error it gave instead.

use http::Response;

use super::ProxyError;
use crate::audit::{Outcome, Reply, Verdict};
use crate::http_io::Body;
use crate::wechat_path::ForwardPath;

/// The longest path a record keeps (WeChat's are far shorter).
const MAX_PATH: usize = 256;

/// Who asked for a forwarded call, and on which listener.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The client's configured name, when the request has one
    /// (`[[clients]]`); recorded as `unknown` otherwise.
    pub client: Option<&'a str>,
    /// `tcp`, `unix` or `compat`.
    pub listener: &'static str,
}

impl Caller<'_> {
    pub fn client_name(&self) -> &str {
        self.client.unwrap_or("unknown")
    }
}

/// How a call that ended in `result` is recorded.
pub fn verdict(result: Result<&Response<Body>, &ProxyError>) -> Verdict {
    match result {
        Ok(response) => answered(response),
        Err(err) => failed(err),
    }
}

/// A relayed answer: what the proxy noted of WeChat's reply, or its
/// status alone for an answer the proxy did not relay.
pub fn answered(response: &Response<Body>) -> Verdict {
    match response.extensions().get::<Reply>() {
        Some(reply) => Verdict::answered(reply),
        None => Verdict::answered(&Reply::new(response.status().as_u16(), None, None)),
    }
}

/// A call the proxy did not complete.
pub fn failed(err: &ProxyError) -> Verdict {
    match err {
        ProxyError::Timeout(_) | ProxyError::Upstream(_) => {
            Verdict::unanswered(Outcome::UpstreamError)
        }
        // WeChat answered, rejecting the token; the broker answered the
        // client in its place.
        ProxyError::TokenRejected {
            errcode, errmsg, ..
        } => Verdict {
            outcome: Outcome::Errcode,
            status: None,
            errcode: Some(*errcode),
            rid: crate::errmsg::rid(errmsg).map(str::to_owned),
        },
        ProxyError::BadPath(_)
        | ProxyError::CredentialEndpoint(_)
        | ProxyError::Withheld(_)
        | ProxyError::TooLarge
        | ProxyError::BadBody(_)
        | ProxyError::BodyTimeout
        | ProxyError::Token(_) => Verdict::unanswered(Outcome::Refused),
    }
}

/// The path as WeChat judges it (section 17's normalisation), with a
/// leading slash and bounded; whatever a percent-encoded `?` or `#` would
/// have started is cut off, so no query value rides in on the path.
pub fn audited_path(judged: &ForwardPath) -> String {
    let path = judged.normal().split(['?', '#']).next().unwrap_or_default();
    let mut audited = String::with_capacity(path.len().min(MAX_PATH) + 1);
    audited.push('/');
    if path.is_ascii() {
        audited.push_str(&path[..path.len().min(MAX_PATH - 1)]);
        return audited;
    }
    for c in path.chars() {
        if audited.len() + c.len_utf8() > MAX_PATH {
            break;
        }
        audited.push(c);
    }
    audited
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_carries_no_query_in_any_spelling() {
        assert_eq!(
            audited_path(&ForwardPath::new("cgi-bin/user/info")),
            "/cgi-bin/user/info"
        );
        assert_eq!(
            audited_path(&ForwardPath::new("/cgi-bin/./user//info/")),
            "/cgi-bin/user/info"
        );
        assert_eq!(
            audited_path(&ForwardPath::new(
                "/cgi-bin/user/info%3Faccess_token%3Dsecret"
            )),
            "/cgi-bin/user/info"
        );
        assert_eq!(
            audited_path(&ForwardPath::new("/cgi-bin/x%23frag")),
            "/cgi-bin/x"
        );
        assert_eq!(
            audited_path(&ForwardPath::new(&"a/".repeat(500))).len(),
            MAX_PATH
        );
        let wide = audited_path(&ForwardPath::new(&"\u{4f60}/".repeat(200)));
        assert!(
            wide.len() <= MAX_PATH && wide.len() > MAX_PATH - 4,
            "{wide}"
        );
        assert!(wide.ends_with(['\u{4f60}', '/']));
    }

    #[test]
    fn refusals_and_transport_failures_have_no_status() {
        let refused = failed(&ProxyError::CredentialEndpoint("/cgi-bin/token"));
        assert_eq!(refused.outcome, Outcome::Refused);
        assert_eq!(refused.status, None);
        let unreachable = failed(&ProxyError::Upstream("connection refused".into()));
        assert_eq!(unreachable.outcome, Outcome::UpstreamError);
        let rejected = failed(&ProxyError::TokenRejected {
            errcode: 40001,
            errmsg: "invalid credential rid: 0a-1b".into(),
            retry_after: 3,
        });
        assert_eq!(rejected.outcome, Outcome::Errcode);
        assert_eq!(rejected.errcode, Some(40001));
        assert_eq!(rejected.rid.as_deref(), Some("0a-1b"));
    }
}
