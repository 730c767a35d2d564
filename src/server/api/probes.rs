//! `/livez` and `/readyz`, on the token API and the operations listener.

use http::{Response, StatusCode};
use serde_json::json;

use super::context::Ctx;
use super::route::Answer;
use crate::broker::Broker;
use crate::engine::LastError;
use crate::http_io::RequestBody;
use crate::server::respond::{self, Body};

pub(super) async fn livez(ctx: Ctx<'_>, _: RequestBody) -> Answer {
    ctx.allow_get()?;
    Ok(live())
}

pub(super) async fn readyz(ctx: Ctx<'_>, _: RequestBody) -> Answer {
    ctx.allow_get()?;
    Ok(ready(&ctx.state.broker))
}

pub fn live() -> Response<Body> {
    respond::json(StatusCode::OK, &json!({ "live": true }))
}

/// Ready while every app holds a valid token; otherwise says which and
/// why, and the broker's address when WeChat refuses it.
pub fn ready(broker: &Broker) -> Response<Body> {
    let now = broker.now_ms();
    let not_ready: Vec<_> = broker
        .apps()
        .iter()
        .filter_map(|app| {
            let view = app.view();
            let reason = view.unready_reason(now)?;
            let mut entry = json!({ "app": app.name(), "reason": reason });
            if let Some(ip) = view.last_error.as_ref().and_then(LastError::blocked_ip) {
                entry["blocked_ip"] = json!(ip.to_string());
            }
            Some(entry)
        })
        .collect();
    if not_ready.is_empty() {
        respond::json(StatusCode::OK, &json!({ "ready": true }))
    } else {
        respond::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "ready": false, "apps": not_ready }),
        )
    }
}
