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

use http::{header, HeaderMap};

use super::context::{check, Ctx};
use super::credentials::{Named, Names, Shape, GET};
use super::route::Answer;
use crate::engine::CredentialRecord;
use crate::http_io::RequestBody;
use crate::identity::{Access, Act, Resource};
use crate::server::api_error::ApiError;
use crate::server::state::ApiState;

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

/// A read of an app's token or ticket, watched: see [`watch`].
pub(super) async fn watched<N: Names>(ctx: Ctx<'_>, _: RequestBody) -> Answer {
    let named = N::named(&ctx, GET)?;
    let record = watch(&ctx, &named).await?;
    Ok(named.answer(&record, false, None))
}

/// The credential once it differs from `wait_change_from` (or at once
/// without one), else the same one after `timeout`. A shutdown, the
/// app's removal or a reload that removes or changes the client ends the
/// wait early. Whatever ended it, the client is authorized again, against
/// the clients in force, before anything is answered.
async fn watch(ctx: &Ctx<'_>, named: &Named) -> Result<Arc<CredentialRecord>, ApiError> {
    let (state, access, target) = (ctx.state, ctx.access, &named.target);
    let Some(from) = ctx.query_value("wait_change_from") else {
        return Ok(target.get(state.token_wait).await?);
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
    target.changed_from(&from, wait, slot.revoked()).await;
    // Judged by the clients in force now: a removed client gets 401, one
    // whose apps no longer include this one 403, and one merely changed
    // the current credential, to watch again from.
    let now = authenticate(state, &ctx.request.headers)?;
    if let Shape::Remote(app) = &named.shape {
        check(&now, Resource::App(app.name()), Act::Read)?;
    }
    // Unchanged, or changed: whatever is valid now. With none valid the
    // watcher learns why at once, as any reader would.
    Ok(target.get(Duration::ZERO).await?)
}
