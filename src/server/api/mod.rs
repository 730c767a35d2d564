//! The token API (DESIGN.md section 5), the same on TCP and on the Unix
//! socket, and the part of it the remote listener serves (section 15).
//! This is its dispatcher: a request's route is the first of
//! [`table::ROUTES`] that matches its path, and the route's handler for
//! the listener answers it, once the caller is known and the listener's
//! rules (no relayed requests, the TCP client header) hold. Each answer
//! is counted under the route's label.

mod apps;
mod context;
mod corps;
mod counts;
mod credentials;
mod diagnostics;
mod params;
mod platforms;
pub(super) mod probes;
mod remote;
mod route;
mod suites;
mod table;
mod tickets;

pub use context::ListenerKind;

use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;
use http::{Method, Request, Response};
use tracing::debug;

use super::request::check_not_relayed;
use super::respond::{self, Body};
use super::state::ApiState;
use crate::http_io::RequestBody;
use crate::identity::Peer;
use context::{unrelayed_client_name, Ctx};
use counts::RouteCounts;
use params::Params;
use route::{Answer, Route};
use table::ROUTES;

/// The route of `path` (the last one, `other`, when no other matches),
/// its position in the table, and the path's parameters.
fn find(path: &str) -> (usize, &'static Route, Params<'_>) {
    ROUTES
        .iter()
        .enumerate()
        .find_map(|(index, route)| Some((index, route, route.matches(path)?)))
        .expect("the last route matches every path")
}

/// The token API's handlers behind one listener kind or another.
pub struct Router {
    state: Arc<ApiState>,
    counts: RouteCounts,
}

impl Router {
    pub fn new(state: Arc<ApiState>) -> Self {
        Router {
            counts: RouteCounts::new(&state.metrics, ROUTES),
            state,
        }
    }

    pub fn state(&self) -> &ApiState {
        &self.state
    }

    /// The token read, answered at once when it can be: a GET of an app's
    /// token while a valid one is held, from a client that passes the
    /// header rules. Nothing is counted unless it answers; anything else
    /// (an error to explain, a token to wait for) is left to
    /// [`Router::handle`].
    pub fn answer_now(
        &self,
        listener: ListenerKind,
        request: &Request<RequestBody>,
    ) -> Option<Response<Body>> {
        if request.method() != Method::GET {
            return None;
        }
        let started = Instant::now();
        let path = request.uri().path();
        // Only the few routes answered at once are matched; most paths (a
        // forwarded call's) are none of them. One that is answers only if
        // no route before it in the table takes the path.
        let (index, params) = ROUTES.iter().enumerate().find_map(|(index, route)| {
            route.now?;
            Some((index, route.matches(path)?))
        })?;
        if ROUTES[..index]
            .iter()
            .any(|earlier| earlier.matches(path).is_some())
        {
            return None;
        }
        let route = &ROUTES[index];
        let now = route.now?;
        let state = &*self.state;
        let client = unrelayed_client_name(request.headers())?;
        let require_header = ListenerKind::Tcp {
            require_client_header: true,
        };
        if client.is_none() && listener == require_header {
            return None;
        }
        // A remote request is authenticated, and a limited local peer's
        // app checked, on the full path only.
        let limited = match listener {
            ListenerKind::Remote => true,
            ListenerKind::Unix | ListenerKind::Tcp { .. } => state.clients.load().limits_local(),
        };
        if limited {
            return None;
        }
        let response = now(state, &params, respond::wants_text(request.uri().query()))?;
        if let Some(client) = client {
            state.metrics.count_client(client);
        }
        self.counts.record(
            listener,
            index,
            response.status(),
            started.elapsed().as_secs_f64(),
        );
        debug!(
            listener = listener.label(),
            route = route.template,
            status = response.status().as_u16(),
            "request"
        );
        Some(response)
    }

    pub async fn handle(
        &self,
        listener: ListenerKind,
        request: Request<RequestBody>,
    ) -> Response<Body> {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let (index, route, params) = find(parts.uri.path());
        let response = match self.dispatch(listener, route, params, &parts, body).await {
            Ok(response) => response,
            Err(err) => err.response(),
        };
        let status = response.status();
        self.counts
            .record(listener, index, status, started.elapsed().as_secs_f64());
        debug!(
            listener = listener.label(),
            route = route.template,
            status = status.as_u16(),
            "request"
        );
        response
    }

    async fn dispatch(
        &self,
        listener: ListenerKind,
        route: &'static Route,
        params: Params<'_>,
        request: &Parts,
        body: RequestBody,
    ) -> Answer {
        let state = &*self.state;
        // Who may read what: a remote client by its credential, a local
        // peer by its uid and gid (SO_PEERCRED on the Unix socket, the
        // socket's owner on loopback TCP; see `tcp_peer`). The remote
        // listener is meant for other hosts, perhaps behind a load
        // balancer that adds X-Forwarded-For: there the credential is
        // the guard.
        let (access, handler) = match listener {
            ListenerKind::Remote => {
                let access = remote::authenticate(state, &request.headers)?;
                if let Some(client) = access.client() {
                    state.metrics.count_client(client);
                }
                (access, route.remote)
            }
            ListenerKind::Unix | ListenerKind::Tcp { .. } => {
                let peer = request.extensions.get::<Peer>().copied();
                let access = state.clients.load().local(peer);
                // One pass over the headers finds the client's name, or a
                // relay mark; then the lookups say which refusal it is.
                let client = match unrelayed_client_name(&request.headers) {
                    Some(client) => client,
                    None => {
                        check_not_relayed(&request.headers)?;
                        None
                    }
                };
                if !route.probe {
                    if let ListenerKind::Tcp {
                        require_client_header: true,
                    } = listener
                    {
                        client.ok_or(super::api_error::ApiError::MissingClientHeader)?;
                    }
                    if let Some(client) = client {
                        state.metrics.count_client(client);
                    }
                }
                (access, Some(route.local))
            }
        };
        let ctx = Ctx {
            state,
            listener,
            access: &access,
            params,
            request,
        };
        match handler {
            Some(handler) => handler(ctx, body).await,
            None => Err(ctx.not_found()),
        }
    }
}
