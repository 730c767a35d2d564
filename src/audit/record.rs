//! One audit record: who forwarded what to WeChat, and what came back.
//! It holds only what is safe to keep: the path without its query, the
//! errcode and the rid, never a token, secret, ticket, body or query
//! value.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// What a call was forwarded for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A configured app, with its own token.
    App(String),
    /// An Open Platform authorizer of `platform`, with its token.
    Authorizer { platform: String, appid: String },
    /// The platform itself, with its component token.
    Component { platform: String },
    /// A WeCom suite, with its suite token (`/cgi-bin/service/*`).
    Suite { suite: String },
    /// A corp that installed WeCom suite `suite`, with the corp's token.
    Corp { suite: String, corpid: String },
}

impl Target {
    /// The configured name the call counts under (the app's, the
    /// platform's or the suite's): a metric label, so never an
    /// authorizer's appid or a corp's id.
    pub fn configured_name(&self) -> &str {
        match self {
            Target::App(name) => name,
            Target::Authorizer { platform, .. } | Target::Component { platform } => platform,
            Target::Suite { suite } | Target::Corp { suite, .. } => suite,
        }
    }
}

/// How a forwarded call ended, the `outcome` of a record and of
/// `wxbroker_proxied_calls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// WeChat answered, with no errcode or errcode 0.
    Ok,
    /// WeChat answered with a non-zero errcode.
    Errcode,
    /// WeChat could not be reached, or did not answer in time.
    UpstreamError,
    /// The broker did not forward the call: a path it never forwards, a
    /// body too large, no valid token to put in.
    Refused,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::Errcode,
        Outcome::UpstreamError,
        Outcome::Refused,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Errcode => "errcode",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Refused => "refused",
        }
    }
}

/// What WeChat answered a call, as far as the audit keeps it. The proxy
/// leaves one in each forwarded response's extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// When the answer was a JSON object with an `errcode`.
    pub errcode: Option<i64>,
    /// The rid at the end of its `errmsg`.
    pub rid: Option<String>,
}

impl Reply {
    pub fn new(status: u16, errcode: Option<i64>, errmsg: Option<&str>) -> Self {
        Reply {
            status,
            errcode,
            rid: errmsg.and_then(crate::errmsg::rid).map(str::to_owned),
        }
    }
}

/// How a call ended: its outcome, and WeChat's answer when there was one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// WeChat's HTTP status; `None` when WeChat did not answer.
    pub status: Option<u16>,
    pub errcode: Option<i64>,
    pub rid: Option<String>,
}

impl Verdict {
    /// WeChat answered `reply`.
    pub fn answered(reply: &Reply) -> Self {
        let outcome = match reply.errcode {
            Some(code) if code != 0 => Outcome::Errcode,
            _ => Outcome::Ok,
        };
        Verdict {
            outcome,
            status: Some(reply.status),
            errcode: reply.errcode,
            rid: reply.rid.clone(),
        }
    }

    /// No answer from WeChat: `outcome` says why.
    pub fn unanswered(outcome: Outcome) -> Self {
        Verdict {
            outcome,
            status: None,
            errcode: None,
            rid: None,
        }
    }
}

/// A forwarded call being made: who asked, through which listener, for
/// what, and since when.
#[derive(Debug)]
pub struct Call {
    at: SystemTime,
    started: Instant,
    client: String,
    listener: &'static str,
    target: Target,
    method: String,
    path: String,
}

impl Call {
    /// Starts the clock on a call of `method` to `path`: the path as the
    /// forwarding route judges it, which the caller has made safe to keep
    /// (no query, bounded).
    pub fn begin(
        client: &str,
        listener: &'static str,
        target: Target,
        method: &http::Method,
        path: String,
    ) -> Self {
        Call {
            at: SystemTime::now(),
            started: Instant::now(),
            client: client.to_owned(),
            listener,
            target,
            method: method.as_str().to_owned(),
            path,
        }
    }

    pub(super) fn finish(self, verdict: Verdict) -> CallRecord {
        CallRecord {
            duration: self.started.elapsed(),
            call: self,
            verdict,
        }
    }
}

/// A finished call, as the writer records it.
#[derive(Debug)]
pub struct CallRecord {
    call: Call,
    verdict: Verdict,
    duration: Duration,
}

/// The JSON line of a record: field order is the documented one.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    client: &'a str,
    listener: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    app: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorizer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    suite: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    corp: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    status: Option<u16>,
    errcode: Option<i64>,
    rid: Option<&'a str>,
    outcome: &'a str,
    duration_ms: u64,
}

impl CallRecord {
    pub fn outcome(&self) -> Outcome {
        self.verdict.outcome
    }

    pub fn target(&self) -> &Target {
        &self.call.target
    }

    pub fn client(&self) -> &str {
        &self.call.client
    }

    fn line(&self) -> Line<'_> {
        let (mut app, mut platform, mut authorizer, mut suite, mut corp) =
            (None, None, None, None, None);
        match &self.call.target {
            Target::App(name) => app = Some(name.as_str()),
            Target::Authorizer {
                platform: name,
                appid,
            } => (platform, authorizer) = (Some(name.as_str()), Some(appid.as_str())),
            Target::Component { platform: name } => platform = Some(name.as_str()),
            Target::Suite { suite: name } => suite = Some(name.as_str()),
            Target::Corp {
                suite: name,
                corpid,
            } => (suite, corp) = (Some(name.as_str()), Some(corpid.as_str())),
        }
        Line {
            time: humantime::format_rfc3339_millis(self.call.at).to_string(),
            client: &self.call.client,
            listener: self.call.listener,
            app,
            platform,
            authorizer,
            suite,
            corp,
            method: &self.call.method,
            path: &self.call.path,
            status: self.verdict.status,
            errcode: self.verdict.errcode,
            rid: self.verdict.rid.as_deref(),
            outcome: self.verdict.outcome.label(),
            duration_ms: u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The record as one JSON line, newline included.
    pub fn to_json_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(&self.line()).expect("a record always serializes");
        line.push(b'\n');
        line
    }

    /// The record as a `tracing` event on target `wxbroker::audit`.
    pub fn emit(&self) {
        // The line costs a clock's formatting: none when no one reads it.
        if !tracing::enabled!(target: "wxbroker::audit", tracing::Level::INFO) {
            return;
        }
        let line = self.line();
        tracing::info!(
            target: "wxbroker::audit",
            time = %line.time,
            client = line.client,
            listener = line.listener,
            app = line.app,
            platform = line.platform,
            authorizer = line.authorizer,
            suite = line.suite,
            corp = line.corp,
            method = line.method,
            path = line.path,
            status = line.status,
            errcode = line.errcode,
            rid = line.rid,
            outcome = line.outcome,
            duration_ms = line.duration_ms,
            "forwarded call"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(target: Target, path: &str, verdict: Verdict) -> CallRecord {
        Call::begin("orders", "unix", target, &http::Method::POST, path.into()).finish(verdict)
    }

    #[test]
    fn a_line_names_the_call_and_what_came_back() {
        let reply = Reply::new(
            200,
            Some(45047),
            Some("out of response count limit rid: 6523f1a2-0123abcd-4567ef89"),
        );
        let line = record(
            Target::App("shop".into()),
            "/cgi-bin/message/custom/send",
            Verdict::answered(&reply),
        )
        .to_json_line();
        assert_eq!(line.last(), Some(&b'\n'));
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["client"], "orders");
        assert_eq!(value["listener"], "unix");
        assert_eq!(value["app"], "shop");
        assert!(value.get("platform").is_none());
        assert_eq!(value["method"], "POST");
        assert_eq!(value["path"], "/cgi-bin/message/custom/send");
        assert_eq!(value["status"], 200);
        assert_eq!(value["errcode"], 45047);
        assert_eq!(value["rid"], "6523f1a2-0123abcd-4567ef89");
        assert_eq!(value["outcome"], "errcode");
        assert!(value["duration_ms"].is_u64());
        let time = value["time"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
    }

    #[test]
    fn an_authorizer_call_names_platform_and_appid() {
        let line = record(
            Target::Authorizer {
                platform: "saas".into(),
                appid: "wxauthorizer".into(),
            },
            "/cgi-bin/user/info",
            Verdict::unanswered(Outcome::UpstreamError),
        )
        .to_json_line();
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["platform"], "saas");
        assert_eq!(value["authorizer"], "wxauthorizer");
        assert!(value.get("app").is_none());
        assert!(value["status"].is_null() && value["errcode"].is_null());
        assert_eq!(value["outcome"], "upstream_error");
    }

    #[test]
    fn a_corp_call_names_suite_and_corpid_and_counts_under_the_suite() {
        let target = Target::Corp {
            suite: "crm".into(),
            corpid: "wwcorp".into(),
        };
        assert_eq!(target.configured_name(), "crm");
        let line = record(
            target,
            "/cgi-bin/user/get",
            Verdict::unanswered(Outcome::Refused),
        )
        .to_json_line();
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["suite"], "crm");
        assert_eq!(value["corp"], "wwcorp");
        assert!(value.get("app").is_none() && value.get("platform").is_none());
        let suite = record(
            Target::Suite {
                suite: "crm".into(),
            },
            "/cgi-bin/service/get_admin_list",
            Verdict::unanswered(Outcome::Refused),
        )
        .to_json_line();
        let value: serde_json::Value = serde_json::from_slice(&suite).unwrap();
        assert_eq!(value["suite"], "crm");
        assert!(value.get("corp").is_none());
    }

    #[test]
    fn zero_is_not_an_error() {
        let verdict = Verdict::answered(&Reply::new(200, Some(0), Some("ok")));
        assert_eq!(verdict.outcome, Outcome::Ok);
        assert_eq!(verdict.rid, None);
        let plain = Verdict::answered(&Reply::new(200, None, None));
        assert_eq!(plain.outcome, Outcome::Ok);
    }
}
