//! The compatible listener's WeCom service provider calls (DESIGN.md
//! sections 12 and 19), for SDKs that speak WeCom's `/cgi-bin/service/*`
//! API unchanged:
//!
//! - `get_suite_token`, `get_provider_token` and `get_corp_token` are
//!   answered from the caches, never forwarded: the suite secret, ticket,
//!   provider secret or permanent code an SDK sends is ignored (an SDK's
//!   own fetch would supersede the token every other client holds);
//! - `get_permanent_code`, `v2/get_permanent_code` and `get_auth_info`
//!   are refused: their answers carry permanent codes, which only the
//!   broker holds (section 21);
//! - every other `/cgi-bin/service/*` call is forwarded with the suite's
//!   token as `suite_access_token` (or, for a call that carries a
//!   `provider_access_token`, with the provider token), and once more
//!   after a rejection of it;
//! - a call holding a corp token the broker served (its current one, or
//!   one of the last it replaced) is forwarded with that corp's current
//!   token, and once more after a rejection; the token index finds whose
//!   it is in O(1). A corp's JS-SDK ticket endpoints are answered from
//!   its ticket cache when the suite keeps that kind (`corp_tickets`);
//! - a 代开发 corp's `gettoken` (its corpid, the permanent code as the
//!   secret) is answered from the corp's cache, unless an `[[apps]]`
//!   entry owns that corpid.
//!
//! With uid or gid clients, each needs the caller's access to the suite,
//! and a forwarded call a path its `apis` list. Each forwarded call (not
//! the ones answered from the caches) is recorded in the call audit.

use bytes::Bytes;
use http::{HeaderMap, Response};
use serde_json::{json, Value};

use super::answer::{audited, audited_failure, Answer, Audited, WxError};
use super::child::child_call;
use super::context::Asked;
use crate::audit::Target;
use crate::config::AppKind;
use crate::credential::TicketKind;
use crate::engine::{CredentialHandle, TokenError};
use crate::http_io::query;
use crate::http_io::RequestBody;
use crate::identity::{Access, Act, Resource};
use crate::server::proxy::{Destination, ProxyError};
use crate::server::request::{read_body, TOKEN_BODY_LIMIT};
use crate::server::respond::{self, Body};
use crate::server::state::ApiState;
use crate::suite::{CorpError, SuiteHandle};
use crate::wechat::is_token_rejected;
use crate::wechat_path::{self, ForwardPath, Withheld};

const SERVICE_ROUTE: &str = "/cgi-bin/service";
const TICKET_ROUTE: &str = "/cgi-bin/ticket";
const CORP_ROUTE: &str = "/{path}";
const WECOM_TOKEN_ROUTE: &str = "/cgi-bin/gettoken";

/// The answer to a suite's or a corp's call, with its route label; the
/// body back when the call is neither.
pub(super) async fn handle(
    asked: Asked<'_>,
    body: RequestBody,
) -> Result<(&'static str, Response<Body>), RequestBody> {
    let (api, access, request) = (asked.api(), asked.access, asked.request);
    let suites = api.broker.suites();
    if suites.is_empty() {
        return Err(body);
    }
    let path = wechat_path::normalise(request.uri.path());
    if let Some(endpoint) = path.strip_prefix("cgi-bin/service/") {
        let answer = service_call(asked, &suites, endpoint, body).await;
        return Ok((SERVICE_ROUTE, answer.unwrap_or_else(WxError::into_response)));
    }
    let query = request.uri.query().unwrap_or("");
    if path == "cgi-bin/gettoken" {
        if let Some((suite, corpid)) = customized_corp(api, &suites, query) {
            let answer = customized_token(api, access, &suite, &corpid, request).await;
            return Ok((
                WECOM_TOKEN_ROUTE,
                answer.unwrap_or_else(WxError::into_response),
            ));
        }
        return Err(body);
    }
    let Some(held) = query::param(query, "access_token").filter(|t| !t.is_empty()) else {
        return Err(body);
    };
    // One index lookup per suite, whatever the number of corps.
    let owner = suites.iter().find_map(|suite| {
        let slot = suite.corps().owner_of(&held)?;
        Some((suite.clone(), slot.id.to_string()))
    });
    let Some((suite, corpid)) = owner else {
        return Err(body);
    };
    let kept = ticket_kind(&path, query::param(query, "type").as_deref())
        .filter(|kind| suite.config().corp_tickets.contains(kind));
    if let Some(kind) = kept {
        let answer = corp_ticket(api, access, &suite, &corpid, kind, request).await;
        return Ok((TICKET_ROUTE, answer.unwrap_or_else(WxError::into_response)));
    }
    let judged = ForwardPath::new(request.uri.path());
    if let Err(refused) = allowed(access, &suite, Act::Forward(&judged)) {
        return Ok((CORP_ROUTE, refused.into_response()));
    }
    let target = Target::Corp {
        suite: suite.name().to_owned(),
        corpid: corpid.clone(),
    };
    let call = api
        .proxy
        .begin_call(&asked.caller(), target, &request.method, &judged);
    let (answer, verdict) = corp_call(asked, &suite, &corpid, body).await;
    api.proxy.finish_call(call, verdict);
    Ok((CORP_ROUTE, answer.unwrap_or_else(WxError::into_response)))
}

/// The 代开发 suite and corp a `gettoken?corpid=` asks for: a corp
/// installed in a customized suite, when no configured app owns that
/// corpid (an app's `gettoken` stays the app's).
fn customized_corp(
    api: &ApiState,
    suites: &[SuiteHandle],
    query: &str,
) -> Option<(SuiteHandle, String)> {
    let corpid = query::param(query, "corpid").filter(|corpid| !corpid.is_empty())?;
    let apps = api.broker.apps();
    let an_apps = apps
        .iter()
        .any(|app| app.config().kind == AppKind::Wecom && app.config().appid == corpid);
    if an_apps {
        return None;
    }
    let suite = suites
        .iter()
        .find(|s| s.config().customized && s.corps().get(&corpid).is_some())?;
    Some((suite.clone(), corpid))
}

/// `gettoken` of a 代开发 corp, from its cache; the permanent code the
/// SDK sends as `corpsecret` is ignored.
async fn customized_token(
    api: &ApiState,
    access: &Access,
    suite: &SuiteHandle,
    corpid: &str,
    request: &http::request::Parts,
) -> Answer {
    if request.method != http::Method::GET {
        return Err(WxError::new(43001, "require GET method"));
    }
    allowed(access, suite, Act::Read)?;
    let token = suite
        .corp_token(corpid, api.token_wait)
        .await
        .map_err(|err| corp_failure(suite, err))?;
    Ok(respond::no_store(respond::json(
        http::StatusCode::OK,
        &json!({
            "errcode": 0,
            "errmsg": "ok",
            "access_token": token.value.expose(),
            "expires_in": token.expires_in(suite.suite_token().now_ms()),
        }),
    )))
}

/// Whether the caller may `act` on `suite`, refused WeChat-shaped.
fn allowed(access: &Access, suite: &SuiteHandle, act: Act<'_>) -> Result<(), WxError> {
    access
        .check(Resource::Suite(suite.name()), act)
        .map_err(|denied| WxError::denied(Resource::Suite(suite.name()), act, denied))
}

/// WeCom's rejections of a suite or provider token: the common three,
/// and 40082 (invalid suite or provider token) and 42009 (suite token
/// expired).
fn suite_token_rejected(errcode: i64) -> bool {
    is_token_rejected(errcode) || matches!(errcode, 40082 | 42009)
}

/// Why one of the suite's own credentials cannot be had, WeChat-shaped:
/// -1 (a code no SDK retries at once), the cause quoted.
fn no_credential(suite: &SuiteHandle, handle: &CredentialHandle, err: &TokenError) -> WxError {
    let what = handle.credential();
    let upstream = match err {
        TokenError::Unavailable {
            last_error: Some(last),
            ..
        } => match last.errcode {
            Some(errcode) => format!("; WeCom answered errcode {errcode}: {}", last.errmsg),
            None => format!("; {}", last.errmsg),
        },
        _ => String::new(),
    };
    WxError::new(
        -1,
        format!(
            "system error (wxbroker: suite '{}' has no valid {what}: {err}{upstream})",
            suite.name()
        ),
    )
}

/// A string field of the body, or of the query.
fn named(body: &Value, query: &str, field: &str) -> Option<String> {
    body.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| query::param(query, field))
        .filter(|value| !value.is_empty())
}

/// The suite a service call is for: the one holding the suite token the
/// client sent, the one whose suite id it names, the one the named corp
/// installed, or the only one.
fn suite_for(suites: &[SuiteHandle], query: &str, body: &Value) -> Result<SuiteHandle, WxError> {
    if let Some(held) = query::param(query, "suite_access_token") {
        if let Some(suite) = suites.iter().find(|s| s.suite_token().knows(&held)) {
            return Ok(suite.clone());
        }
    }
    if let Some(suite_id) = named(body, query, "suite_id") {
        return suites
            .iter()
            .find(|s| s.config().suite_id == suite_id)
            .cloned()
            .ok_or_else(|| {
                WxError::new(
                    40083,
                    "invalid suite_id (wxbroker: no configured suite has this suite_id)",
                )
            });
    }
    if let Some(corpid) = named(body, query, "auth_corpid") {
        if let Some(suite) = suites.iter().find(|s| s.corps().get(&corpid).is_some()) {
            return Ok(suite.clone());
        }
    }
    match suites {
        [only] => Ok(only.clone()),
        _ => Err(WxError::new(
            40082,
            "invalid suite_access_token (wxbroker: no configured suite holds this token; name the suite_id)",
        )),
    }
}

async fn service_call(
    asked: Asked<'_>,
    suites: &[SuiteHandle],
    endpoint: &str,
    body: RequestBody,
) -> Answer {
    let (api, access, request) = (asked.api(), asked.access, asked.request);
    let credential_fetch = matches!(
        endpoint,
        "get_suite_token" | "get_provider_token" | "get_corp_token"
    );
    // An answer of permanent codes (or an operator action) is refused
    // before anything is read or asked for.
    match wechat_path::withheld(request.uri.path()) {
        Some(Withheld::CredentialFetch(_)) | None => {}
        Some(withheld) => {
            return Err(WxError::new(
                -1,
                format!("system error (wxbroker: refused: {withheld})"),
            ))
        }
    }
    let query = request.uri.query().unwrap_or("");
    let bytes = read_body(body, TOKEN_BODY_LIMIT)
        .await
        .map_err(|err| WxError::new(47001, format!("data format error: {err}")))?;
    let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if endpoint == "get_provider_token" {
        return provider_token(api, access, suites, &json, query).await;
    }
    if !credential_fetch && query::param(query, "provider_access_token").is_some() {
        return forward_provider_call(asked, suites, bytes).await;
    }
    let suite = suite_for(suites, query, &json)?;
    match endpoint {
        "get_suite_token" => {
            allowed(access, &suite, Act::Read)?;
            let handle = suite.suite_token();
            let token = handle
                .token(api.token_wait)
                .await
                .map_err(|err| no_credential(&suite, handle, &err))?;
            Ok(respond::no_store(respond::json(
                http::StatusCode::OK,
                &json!({
                    "suite_access_token": token.value.expose(),
                    "expires_in": token.expires_in(handle.now_ms()),
                }),
            )))
        }
        "get_corp_token" => {
            allowed(access, &suite, Act::Read)?;
            let corpid = named(&json, query, "auth_corpid")
                .ok_or_else(|| WxError::new(41002, "auth_corpid missing"))?;
            let token = suite
                .corp_token(&corpid, api.token_wait)
                .await
                .map_err(|err| corp_failure(&suite, err))?;
            Ok(respond::no_store(respond::json(
                http::StatusCode::OK,
                &json!({
                    "access_token": token.value.expose(),
                    "expires_in": token.expires_in(suite.suite_token().now_ms()),
                }),
            )))
        }
        _ => {
            let judged = ForwardPath::new(request.uri.path());
            allowed(access, &suite, Act::Forward(&judged))?;
            let target = Target::Suite {
                suite: suite.name().to_owned(),
            };
            let call = api
                .proxy
                .begin_call(&asked.caller(), target, &request.method, &judged);
            let with = Credentialed {
                handle: suite.suite_token(),
                param: "suite_access_token",
            };
            let (answer, verdict) = forward_credentialed(asked, &suite, with, bytes).await;
            api.proxy.finish_call(call, verdict);
            answer
        }
    }
}

/// Why a corp's token cannot be had, WeChat-shaped.
fn corp_failure(suite: &SuiteHandle, err: CorpError) -> WxError {
    match err {
        CorpError::NotFound => WxError::new(
            40084,
            format!(
                "invalid permanent_code (wxbroker: this corp has not installed suite '{}')",
                suite.name()
            ),
        ),
        CorpError::Unavailable { .. } | CorpError::TicketNotConfigured => WxError::new(
            -1,
            "system error (wxbroker: the corp has no valid token yet; retry in a second)",
        ),
    }
}

/// `get_provider_token` `{corpid, provider_secret}`: the provider token
/// of a suite of that provider the caller may read, from its cache.
async fn provider_token(
    api: &ApiState,
    access: &Access,
    suites: &[SuiteHandle],
    json: &Value,
    query: &str,
) -> Answer {
    let corpid =
        named(json, query, "corpid").ok_or_else(|| WxError::new(41002, "corpid missing"))?;
    let (suite, handle) = provider_of(access, suites, |s| s.config().provider_corpid == corpid)?;
    let token = handle
        .token(api.token_wait)
        .await
        .map_err(|err| no_credential(&suite, &handle, &err))?;
    Ok(respond::no_store(respond::json(
        http::StatusCode::OK,
        &json!({
            "provider_access_token": token.value.expose(),
            "expires_in": token.expires_in(handle.now_ms()),
        }),
    )))
}

/// The first suite matching `which` with a provider token, preferring
/// one the caller may read; refused as the first would be when the
/// caller may read none.
fn provider_of(
    access: &Access,
    suites: &[SuiteHandle],
    which: impl Fn(&SuiteHandle) -> bool,
) -> Result<(SuiteHandle, CredentialHandle), WxError> {
    let mut matching = suites.iter().filter(|s| which(s)).peekable();
    if matching.peek().is_none() {
        return Err(WxError::new(
            40013,
            "invalid corpid (wxbroker: no configured suite has this provider_corpid)",
        ));
    }
    let with_provider: Vec<(SuiteHandle, CredentialHandle)> = matching
        .filter_map(|s| Some((s.clone(), s.provider_token()?.clone())))
        .collect();
    let readable = with_provider
        .iter()
        .find(|(suite, _)| allowed(access, suite, Act::Read).is_ok());
    match (readable, with_provider.first()) {
        (Some(found), _) => Ok(found.clone()),
        (None, Some((first, _))) => Err(allowed(access, first, Act::Read)
            .err()
            .unwrap_or_else(|| WxError::new(-1, "system error"))),
        (None, None) => Err(WxError::new(
            -1,
            "system error (wxbroker: no provider_secret is configured for this provider_corpid)",
        )),
    }
}

/// A service call carrying a `provider_access_token`: forwarded with the
/// provider token of the suite that served the one held (or the first
/// with a provider token the caller may read).
async fn forward_provider_call(asked: Asked<'_>, suites: &[SuiteHandle], body: Bytes) -> Answer {
    let (api, access, request) = (asked.api(), asked.access, asked.request);
    let query = request.uri.query().unwrap_or("");
    let held = query::param(query, "provider_access_token").unwrap_or_default();
    let knows = |s: &SuiteHandle| s.provider_token().is_some_and(|p| p.knows(&held));
    let (suite, handle) = if suites.iter().any(knows) {
        provider_of(access, suites, knows)?
    } else {
        provider_of(access, suites, |_| true)?
    };
    let judged = ForwardPath::new(request.uri.path());
    allowed(access, &suite, Act::Forward(&judged))?;
    let target = Target::Suite {
        suite: suite.name().to_owned(),
    };
    let call = api
        .proxy
        .begin_call(&asked.caller(), target, &request.method, &judged);
    let with = Credentialed {
        handle: &handle,
        param: "provider_access_token",
    };
    let (answer, verdict) = forward_credentialed(asked, &suite, with, body).await;
    api.proxy.finish_call(call, verdict);
    answer
}

/// One of the suite's own credentials, and the query parameter it goes
/// upstream in.
struct Credentialed<'a> {
    handle: &'a CredentialHandle,
    param: &'static str,
}

/// A service call forwarded with the suite's (or provider's) token; a
/// rejection of it is reported and the call made once more.
async fn forward_credentialed(
    asked: Asked<'_>,
    suite: &SuiteHandle,
    with: Credentialed<'_>,
    body: Bytes,
) -> Audited {
    let (api, request) = (asked.api(), asked.request);
    // The path is judged before the token is asked for: a refused call
    // makes no upstream call at all.
    let (destination, headers) = match prepare(asked, suite, with.param) {
        Ok(prepared) => prepared,
        Err(err) => return audited_failure(&err),
    };
    let handle = with.handle;
    if let Err(err) = handle.token(api.token_wait).await {
        return audited(Err(no_credential(suite, handle, &err)));
    }
    let call = (&request.method, &destination, &headers, &body);
    let sent = api
        .proxy
        .send_with_credential(handle, call, with.param, suite_token_rejected)
        .await;
    match sent {
        Ok((response, _)) => audited(Ok(response)),
        Err(err) => audited_failure(&err),
    }
}

/// The URL and headers of a forwarded call (its body is read already),
/// the client's value of `param` dropped.
fn prepare(
    asked: Asked<'_>,
    suite: &SuiteHandle,
    param: &str,
) -> Result<(Destination, HeaderMap), ProxyError> {
    asked
        .api()
        .proxy
        .token_call_target(&suite.config().api_base, &asked.forward(), param)
}

/// The ticket kind a (normalised) WeCom ticket path asks for: the corp's
/// `get_jsapi_ticket`, and `ticket/get?type=agent_config`.
fn ticket_kind(path: &str, type_: Option<&str>) -> Option<TicketKind> {
    match (path, type_) {
        ("cgi-bin/get_jsapi_ticket", _) => Some(TicketKind::Jsapi),
        ("cgi-bin/ticket/get", Some("agent_config")) => Some(TicketKind::AgentConfig),
        _ => None,
    }
}

/// A corp's JS-SDK ticket, from its cache.
async fn corp_ticket(
    api: &ApiState,
    access: &Access,
    suite: &SuiteHandle,
    corpid: &str,
    kind: TicketKind,
    request: &http::request::Parts,
) -> Answer {
    if request.method != http::Method::GET {
        return Err(WxError::new(43001, "require GET method"));
    }
    allowed(access, suite, Act::Read)?;
    let handle = suite
        .corp_ticket(corpid, kind)
        .map_err(|err| corp_failure(suite, err))?;
    let ticket = handle.token(api.token_wait).await.map_err(|err| {
        WxError::new(
            -1,
            format!("system error (wxbroker: the corp has no valid {kind} ticket: {err})"),
        )
    })?;
    Ok(respond::wechat_ticket(&ticket, handle.now_ms()))
}

/// A corp's call ([`child_call`]).
async fn corp_call(
    asked: Asked<'_>,
    suite: &SuiteHandle,
    corpid: &str,
    body: RequestBody,
) -> Audited {
    let wait = asked.api().token_wait;
    child_call(
        asked,
        &suite.config().api_base,
        body,
        suite.corp_token(corpid, wait),
        |reported| async move { suite.invalidate_corp(corpid, &reported, wait).await },
        |err| corp_failure(suite, err),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_and_provider_tokens_have_rejections_of_their_own() {
        for errcode in [40001, 40014, 42001, 40082, 42009] {
            assert!(suite_token_rejected(errcode), "{errcode}");
        }
        for errcode in [0, 40085, 45009, 40084] {
            assert!(!suite_token_rejected(errcode), "{errcode}");
        }
    }

    #[test]
    fn corp_ticket_paths_name_their_kind() {
        assert_eq!(
            ticket_kind("cgi-bin/get_jsapi_ticket", None),
            Some(TicketKind::Jsapi)
        );
        assert_eq!(
            ticket_kind("cgi-bin/ticket/get", Some("agent_config")),
            Some(TicketKind::AgentConfig)
        );
        assert_eq!(ticket_kind("cgi-bin/ticket/get", Some("jsapi")), None);
        assert_eq!(ticket_kind("cgi-bin/ticket/getticket", Some("jsapi")), None);
    }
}
