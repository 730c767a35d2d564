//! What a compatible listener's handler knows of its request: the
//! listener (and the one app a per-app listener serves), who asks, and
//! the request's head.

use std::sync::Arc;

use http::request::Parts;

use super::answer::WxError;
use crate::engine::AppHandle;
use crate::identity::{Access, Act, Resource};
use crate::server::proxy::{Caller, Forward};
use crate::server::state::ApiState;

/// The listener's state: the API's, and for a per-app listener
/// (`[[apps]] compat_listen`) the one app it serves.
pub struct CompatState {
    api: Arc<ApiState>,
    pinned: Option<String>,
}

impl CompatState {
    pub fn new(api: Arc<ApiState>, pinned: Option<String>) -> Self {
        CompatState { api, pinned }
    }

    pub fn api(&self) -> &ApiState {
        &self.api
    }

    /// The pinned app of a per-app listener: `None` on the shared one;
    /// an error when a reload removed the app.
    pub(super) fn pinned(&self) -> Option<Result<AppHandle, WxError>> {
        let name = self.pinned.as_deref()?;
        Some(
            self.api
                .broker
                .apps()
                .iter()
                .find(|app| app.name() == name)
                .cloned()
                .ok_or_else(|| {
                    WxError::new(
                        -1,
                        format!("system error (wxbroker: app '{name}' is no longer configured)"),
                    )
                }),
        )
    }
}

/// A request on a compatible listener.
#[derive(Clone, Copy)]
pub(super) struct Asked<'a> {
    pub state: &'a CompatState,
    /// What the caller may read and call.
    pub access: &'a Access,
    pub request: &'a Parts,
}

impl<'a> Asked<'a> {
    pub fn api(&self) -> &'a ApiState {
        &self.state.api
    }

    /// The raw query, empty when there is none.
    pub fn query(&self) -> &'a str {
        self.request.uri.query().unwrap_or("")
    }

    /// Who calls, for the call audit: the client its peer was identified
    /// as, if any.
    pub fn caller(&self) -> Caller<'a> {
        Caller {
            client: self.access.client(),
            listener: "compat",
        }
    }

    /// [`Access::check`], its refusal WeChat-shaped.
    pub fn allow(&self, resource: Resource<'_>, act: Act<'_>) -> Result<(), WxError> {
        self.access
            .check(resource, act)
            .map_err(|denied| WxError::denied(resource, act, denied))
    }

    /// The call as asked, to forward below an `api_base`.
    pub fn forward(&self) -> Forward<'a> {
        let path = self.request.uri.path();
        Forward::new(
            &self.request.method,
            path.strip_prefix('/').unwrap_or(path),
            self.request.uri.query(),
            &self.request.headers,
        )
    }
}
