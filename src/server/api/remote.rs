//! The remote listener (`[server] remote_listen`, DESIGN.md section 15):
//! the token and ticket API over TLS for `[[clients]]` that present a
//! bearer credential, which is how followers (staging, a fleet behind one
//! egress IP) read a leader's credentials. It serves no proxy, no
//! `wx.config` signing and no compatible API: only reading, invalidating
//! and watching the credentials of the apps each client is allowed.
//!
//! Its answers carry what a follower checks before it serves anything:
//! the app's appid and grant, which credential it is, and a `version`
//! (a digest prefix of the value) to watch from:
//! `GET /v1/apps/{app}/token?wait_change_from=VERSION&timeout=25` answers
//! as soon as the credential differs from VERSION, or with the same one
//! when `timeout` seconds pass. A client holds at most
//! `remote_max_watches_per_client` watches at once; a reload that
//! removes or changes the client ends them with 401, and any watch is
//! authorized again before it answers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Response, StatusCode};
use serde_json::json;

use super::context::{check, Ctx};
use super::route::Answer;
use super::tickets::ticket_of;
use crate::credential::Credential;
use crate::engine::{AppHandle, CredentialHandle, InvalidateOutcome, TokenRecord};
use crate::http_io::RequestBody;
use crate::identity::{Access, Act, Resource};
use crate::server::api_error::ApiError;
use crate::server::respond::{self, Body};
use crate::server::state::ApiState;
use crate::store::grant_label;

/// A watch answers at the latest after this long, so proxies and NAT
/// tables on the way never see an idle connection for long.
const MAX_WATCH: Duration = Duration::from_secs(60);
const DEFAULT_WATCH: Duration = Duration::from_secs(25);

/// The caller's access, from `Authorization: Bearer <credential>`; 401
/// for a missing, malformed or unknown credential alike.
pub(super) fn authenticate(state: &ApiState, headers: &HeaderMap) -> Result<Access, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or(ApiError::Unauthorized)?;
    let (scheme, credential) = value.split_once(' ').ok_or(ApiError::Unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized);
    }
    state
        .clients
        .load()
        .bearer(credential.trim())
        .ok_or(ApiError::Unauthorized)
}

/// `GET /v1/apps/{app}/token`, watched.
pub(super) async fn token(ctx: Ctx<'_>, _: RequestBody) -> Answer {
    ctx.allow_get()?;
    let app = ctx.app(ctx.param("app"))?;
    let token = watch(&ctx, &app, &app).await?;
    Ok(answer(&app, &app, &token, None))
}

/// `GET /v1/apps/{app}/tickets/{kind}`, watched.
pub(super) async fn ticket(ctx: Ctx<'_>, _: RequestBody) -> Answer {
    ctx.allow_get()?;
    let app = ctx.app(ctx.param("app"))?;
    let ticket = ticket_of(&app, ctx.param("kind"))?;
    let record = watch(&ctx, &app, ticket).await?;
    Ok(answer(&app, ticket, &record, None))
}

/// `POST /v1/apps/{app}/token/invalidate`.
pub(super) async fn invalidate_token(ctx: Ctx<'_>, body: RequestBody) -> Answer {
    ctx.allow_post()?;
    let app = ctx.app(ctx.param("app"))?;
    let body = ctx.body(body).await?;
    invalidate(ctx.state, &app, &app, &body).await
}

/// `POST /v1/apps/{app}/tickets/{kind}/invalidate`.
pub(super) async fn invalidate_ticket(ctx: Ctx<'_>, body: RequestBody) -> Answer {
    ctx.allow_post()?;
    let app = ctx.app(ctx.param("app"))?;
    let ticket = ticket_of(&app, ctx.param("kind"))?;
    let body = ctx.body(body).await?;
    invalidate(ctx.state, &app, ticket, &body).await
}

/// The credential once it differs from `wait_change_from` (or at once
/// without one), else the same one after `timeout`. A shutdown, the
/// app's removal or a reload that removes or changes the client ends the
/// wait early. Whatever ended it, the client is authorized again, against
/// the clients in force, before anything is answered.
async fn watch(
    ctx: &Ctx<'_>,
    app: &AppHandle,
    handle: &CredentialHandle,
) -> Result<Arc<TokenRecord>, ApiError> {
    let (state, access) = (ctx.state, ctx.access);
    let unavailable = |err| ApiError::from_credential_error(app.name(), handle.credential(), err);
    let Some(from) = ctx.query_value("wait_change_from") else {
        return handle.token(state.token_wait).await.map_err(unavailable);
    };
    let wait = match ctx.query_value("timeout") {
        None => DEFAULT_WATCH,
        Some(text) => text
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| ApiError::BadRequest("timeout takes whole seconds".to_owned()))?
            .min(MAX_WATCH),
    };
    // Every remote access names its client.
    let slot = state.watches.enter(access.client().unwrap_or_default())?;
    let mut changes = handle.subscribe();
    let changed = changes.wait_for(|view| {
        view.valid_token(handle.now_ms())
            .is_some_and(|token| token.version() != from)
    });
    tokio::select! {
        biased;
        () = slot.revoked() => {}
        _ = tokio::time::timeout(wait, changed) => {}
        () = handle.stopped().cancelled() => {}
    }
    // Judged by the clients in force now: a removed client gets 401, one
    // whose apps no longer include this one 403, and one merely changed
    // the current credential, to watch again from.
    let now = authenticate(state, &ctx.request.headers)?;
    check(&now, Resource::App(app.name()), Act::Read)?;
    // Unchanged, or changed: whatever is valid now. With none valid the
    // watcher learns why at once, as any reader would.
    handle.token(Duration::ZERO).await.map_err(unavailable)
}

/// A credential as the remote listener answers it.
fn answer(
    app: &AppHandle,
    handle: &CredentialHandle,
    record: &TokenRecord,
    outcome: Option<InvalidateOutcome>,
) -> Response<Body> {
    let config = app.config();
    let now = handle.now_ms();
    let mut body = json!({
        "app": config.name,
        "appid": config.appid,
        "grant": grant_label(config.kind, config.grant),
        "credential": handle.credential().label(),
        "expires_in": record.expires_in(now),
        "expires_at": record.expires_at(),
        "fetched_at": record.fetched_at(),
        "version": record.version(),
    });
    let credential = handle.credential();
    if let Credential::Ticket(kind) = credential {
        body["kind"] = json!(kind.name());
    }
    body[credential.answer_field()] = json!(record.value.expose());
    if let Some(outcome) = outcome {
        body["refreshed"] = json!(outcome == InvalidateOutcome::Refreshed);
        body["outcome"] = json!(outcome.metric_label());
    }
    respond::no_store(respond::json(StatusCode::OK, &body))
}

/// An invalidation a follower forwards: the leader decides, exactly as
/// for a local caller (compare-and-refresh, `min_forced_interval`).
async fn invalidate(
    state: &ApiState,
    app: &AppHandle,
    handle: &CredentialHandle,
    body: &Bytes,
) -> Result<Response<Body>, ApiError> {
    let field = handle.credential().answer_field();
    let expected = || format!("expected {{\"{field}\": \"…\"}}");
    let reported: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|err| ApiError::BadRequest(format!("{}: {err}", expected())))?;
    let reported = match reported.get(field) {
        Some(serde_json::Value::String(reported)) => reported.as_str(),
        Some(serde_json::Value::Null) | None => return Err(ApiError::BadRequest(expected())),
        Some(_) => {
            return Err(ApiError::BadRequest(format!(
                "{}: \"{field}\" is not a string",
                expected()
            )))
        }
    };
    let unavailable = |err| ApiError::from_credential_error(app.name(), handle.credential(), err);
    let deadline = tokio::time::Instant::now() + state.token_wait;
    let outcome = handle
        .invalidate(reported, state.token_wait)
        .await
        .map_err(unavailable)?;
    let record = handle
        .token(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
        .map_err(unavailable)?;
    Ok(answer(app, handle, &record, Some(outcome)))
}
