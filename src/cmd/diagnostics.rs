//! `wxbroker quota`, `clear-quota` and `rid`: WeChat's diagnostics, asked
//! through the running broker with its own credentials.

use std::process::ExitCode;

use http::Method;
use wxbroker::cli::{BrokerArgs, ClearQuotaArgs, QuotaArgs, RidArgs};
use wxbroker::client::{self, Target};

use super::{report, CONFIG_ERROR};

/// `wxbroker quota`: WeChat's count, asked through the running broker.
pub async fn quota(args: QuotaArgs) -> anyhow::Result<()> {
    let path = format!(
        "/v1/apps/{}/quota?cgi_path={}",
        path_segment(&args.app),
        url_encode(&args.cgi_path)
    );
    let answer = ask_broker(&args.broker, Method::GET, &path, None).await?;
    print!("{}", wxbroker::diagnostics::report::quota(&answer));
    Ok(())
}

/// `wxbroker clear-quota`: refused without `--confirm`, as each reset
/// spends one of the account's few a month.
pub async fn clear_quota(args: ClearQuotaArgs) -> ExitCode {
    if !args.confirm {
        eprintln!(
            "error: clear-quota resets every daily quota of app {}'s account and spends one of its {} resets a month \
             (shared with the web console); add --confirm to go ahead",
            args.app,
            wxbroker::diagnostics::RESETS_PER_MONTH
        );
        return ExitCode::from(CONFIG_ERROR);
    }
    report(reset_quota(args).await)
}

/// `wxbroker clear-quota --confirm`.
async fn reset_quota(args: ClearQuotaArgs) -> anyhow::Result<()> {
    let path = format!("/v1/apps/{}/clear_quota", path_segment(&args.app));
    let body = bytes::Bytes::from_static(br#"{"confirm":true}"#);
    let answer = ask_broker(&args.broker, Method::POST, &path, Some(body)).await?;
    print!("{}", wxbroker::diagnostics::report::clear_quota(&answer));
    Ok(())
}

/// `wxbroker rid`.
pub async fn rid(args: RidArgs) -> anyhow::Result<()> {
    let path = format!("/v1/apps/{}/rids/{}", path_segment(&args.app), args.rid);
    let answer = ask_broker(&args.broker, Method::GET, &path, None).await?;
    print!("{}", wxbroker::diagnostics::report::rid(&answer));
    Ok(())
}

/// One request to the broker the way `wxbroker token` finds it; the JSON
/// answer, or the broker's error message (with WeChat's errcode) as the
/// error.
async fn ask_broker(
    broker: &BrokerArgs,
    method: Method,
    path: &str,
    body: Option<bytes::Bytes>,
) -> anyhow::Result<serde_json::Value> {
    let target = match &broker.socket {
        Some(path) => Target::Unix(path.clone()),
        None => Target::Tcp(broker.url.clone()),
    };
    let reply = client::send(&target, method, path, &broker.client, body, broker.timeout).await?;
    let answer = serde_json::from_slice::<serde_json::Value>(&reply.body).ok();
    if reply.status.is_success() {
        return answer.ok_or_else(|| {
            anyhow::anyhow!("the broker at {target} answered a body that is not JSON")
        });
    }
    let error = answer.as_ref().map(|answer| &answer["error"]);
    let message = error
        .and_then(|error| error["message"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&reply.body).into_owned());
    let code = error
        .and_then(|error| error["code"].as_str())
        .unwrap_or("error");
    let wechat = error
        .and_then(|error| Some((error["errcode"].as_i64()?, error["errmsg"].as_str()?)))
        .map_or(String::new(), |(errcode, errmsg)| {
            format!("\nwechat said: errcode {errcode}: {errmsg}")
        });
    anyhow::bail!(
        "the broker at {target} answered {} {code}: {message}{wechat}",
        reply.status.as_u16()
    )
}

/// An app name as a path segment: names are `[a-z0-9_-]`, anything else
/// is percent-encoded so it reaches the broker (and its "no app named"
/// answer) intact.
fn path_segment(name: &str) -> String {
    url_encode(name)
}

fn url_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
