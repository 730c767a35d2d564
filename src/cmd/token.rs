//! `wxbroker token`: prints an app's current token, asked of a running
//! broker (for shell scripts).

use http::Method;
use wxbroker::cli::TokenArgs;
use wxbroker::client::{self, Target};

pub async fn run(args: TokenArgs) -> anyhow::Result<()> {
    let target = match args.socket {
        Some(path) => Target::Unix(path),
        None => Target::Tcp(args.url),
    };
    let path = match &args.app {
        Some(app) => format!("/v1/apps/{app}/token?format=text"),
        None => "/v1/token?format=text".to_owned(),
    };
    let reply = client::send(
        &target,
        Method::GET,
        &path,
        &args.client,
        None,
        args.timeout,
    )
    .await?;
    if reply.status.is_success() {
        println!("{}", String::from_utf8_lossy(&reply.body).trim_end());
        return Ok(());
    }
    let message = serde_json::from_slice::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|body| body["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&reply.body).into_owned());
    anyhow::bail!(
        "the broker at {target} answered {}: {message}",
        reply.status
    )
}
