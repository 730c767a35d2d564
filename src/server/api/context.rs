//! What a route's handler knows of its request, and the checks every
//! route makes with it: the method, the caller's access, the app it
//! names, its small body.

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::params::Params;
use crate::broker::Broker;
use crate::engine::AppHandle;
use crate::http_io::query;
use crate::http_io::RequestBody;
use crate::identity::{Access, Act, Resource};
use crate::server::api_error::ApiError;
use crate::server::proxy::{Caller, Forward};
use crate::server::request::{is_relay_mark, read_body, TOKEN_BODY_LIMIT};
use crate::server::respond;
use crate::server::state::ApiState;

const WXBROKER_CLIENT: HeaderName = HeaderName::from_static("wxbroker-client");

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Tcp {
        require_client_header: bool,
    },
    Unix,
    /// `remote_listen`: TLS, bearer-authenticated clients, token and
    /// ticket routes only (see `remote`).
    Remote,
}

impl ListenerKind {
    /// Every kind, in [`ListenerKind::index`] order.
    pub(super) const ALL: [ListenerKind; 3] = [
        ListenerKind::Tcp {
            require_client_header: false,
        },
        ListenerKind::Unix,
        ListenerKind::Remote,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            ListenerKind::Tcp { .. } => "tcp",
            ListenerKind::Unix => "unix",
            ListenerKind::Remote => "remote",
        }
    }

    pub(super) fn index(self) -> usize {
        match self {
            ListenerKind::Tcp { .. } => 0,
            ListenerKind::Unix => 1,
            ListenerKind::Remote => 2,
        }
    }
}

/// A request as its handler sees it.
#[derive(Clone, Copy)]
pub(super) struct Ctx<'a> {
    pub state: &'a ApiState,
    pub listener: ListenerKind,
    /// What the caller may read and do.
    pub access: &'a Access,
    pub params: Params<'a>,
    pub request: &'a Parts,
}

impl<'a> Ctx<'a> {
    /// The value of the path's `{name}`.
    pub fn param(&self, name: &str) -> &'a str {
        self.params.get(name)
    }

    pub fn query(&self) -> Option<&'a str> {
        self.request.uri.query()
    }

    /// The decoded value of the query's first `key` pair.
    pub fn query_value(&self, key: &str) -> Option<String> {
        query::param(self.query()?, key)
    }

    /// Whether the value is wanted bare, as `text/plain` (`?format=text`).
    pub fn wants_text(&self) -> bool {
        respond::wants_text(self.query())
    }

    pub fn method(&self) -> &'a Method {
        &self.request.method
    }

    /// A read: GET, or HEAD.
    pub fn allow_get(&self) -> Result<(), ApiError> {
        let method = self.method();
        if method == Method::GET || method == Method::HEAD {
            Ok(())
        } else {
            Err(ApiError::MethodNotAllowed {
                method: method.to_string(),
                allowed: "GET",
            })
        }
    }

    pub fn allow_post(&self) -> Result<(), ApiError> {
        let method = self.method();
        if method == Method::POST {
            Ok(())
        } else {
            Err(ApiError::MethodNotAllowed {
                method: method.to_string(),
                allowed: "POST",
            })
        }
    }

    /// 404 for this request's path.
    pub fn not_found(&self) -> ApiError {
        ApiError::RouteNotFound {
            method: self.method().to_string(),
            path: self.request.uri.path().chars().take(256).collect(),
        }
    }

    /// [`Access::check`], its refusal as the API answers it.
    pub fn check(&self, resource: Resource<'_>, act: Act<'_>) -> Result<(), ApiError> {
        check(self.access, resource, act)
    }

    /// The app named `name`, if it exists and the caller may read it. An
    /// app the caller may not read is 403 whether or not it exists, so
    /// the answer does not say which apps a broker has.
    pub fn app(&self, name: &str) -> Result<AppHandle, ApiError> {
        let broker = &self.state.broker;
        self.check(Resource::App(name), Act::Read)?;
        broker.app(name).ok_or_else(|| ApiError::AppNotFound {
            name: name.chars().take(64).collect(),
            configured: visible_names(broker, self.access),
        })
    }

    /// The whole (small, JSON) body.
    pub async fn body(&self, body: RequestBody) -> Result<Bytes, ApiError> {
        read_body(body, TOKEN_BODY_LIMIT).await
    }

    /// Who asks, for the call audit.
    pub fn caller(&self) -> Caller<'a> {
        Caller {
            client: self.access.client(),
            listener: self.listener.label(),
        }
    }

    /// A call to forward to `path` below an `api_base`, as asked.
    pub fn forward(&self, path: &'a str) -> Forward<'a> {
        Forward::new(self.method(), path, self.query(), &self.request.headers)
    }
}

/// [`Access::check`], its refusal as the API answers it.
pub(super) fn check(access: &Access, resource: Resource<'_>, act: Act<'_>) -> Result<(), ApiError> {
    access
        .check(resource, act)
        .map_err(|denied| ApiError::denied(resource, act, denied))
}

/// The names of the apps `access` may read, for messages.
pub(super) fn visible_names(broker: &Broker, access: &Access) -> String {
    broker
        .names()
        .into_iter()
        .filter(|name| access.allows(name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The largest page of a listing (`GET .../authorizers`, `.../corps`).
pub(super) const MAX_PAGE: usize = 500;
/// The page size when `limit` is not given.
const DEFAULT_PAGE: usize = 100;

/// `offset` and `limit` of a listing's page: `limit` defaults to 100 and
/// is held within 1..=500; anything unreadable is the default.
pub(super) fn page(query: Option<&str>) -> (usize, usize) {
    let (mut offset, mut limit) = (0usize, DEFAULT_PAGE);
    for (key, value) in query::pairs(query.unwrap_or("")) {
        match &*key {
            "offset" => offset = value.parse().unwrap_or(0),
            "limit" => limit = value.parse().unwrap_or(DEFAULT_PAGE),
            _ => {}
        }
    }
    (offset, limit.clamp(1, MAX_PAGE))
}

/// The `Wxbroker-Client` header, if present and well-formed: the lookup
/// [`unrelayed_client_name`], which the requests use, must agree with.
#[cfg(test)]
fn client_name(headers: &HeaderMap) -> Option<&str> {
    well_formed_client(headers.get(&WXBROKER_CLIENT)?)
}

/// The client's name (the `Wxbroker-Client` header, if present and
/// well-formed), from one pass over the few headers a request carries
/// rather than a lookup for each header asked about; `None` when the
/// request bears a relay mark, which [`check_not_relayed`] then explains.
///
/// [`check_not_relayed`]: crate::server::request::check_not_relayed
pub(super) fn unrelayed_client_name(headers: &HeaderMap) -> Option<Option<&str>> {
    let mut client = None;
    for (name, value) in headers {
        if is_relay_mark(name) {
            return None;
        }
        if client.is_none() && *name == WXBROKER_CLIENT {
            client = Some(value);
        }
    }
    Some(client.and_then(well_formed_client))
}

fn well_formed_client(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let well_formed = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    well_formed.then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_default_to_a_hundred_and_never_pass_five_hundred() {
        assert_eq!(page(None), (0, 100));
        assert_eq!(page(Some("offset=20&limit=7")), (20, 7));
        assert_eq!(page(Some("limit=1000")), (0, MAX_PAGE));
        assert_eq!(page(Some("limit=0")), (0, 1));
        assert_eq!(page(Some("limit=x&offset=-1")), (0, 100));
    }

    #[test]
    fn client_names_are_validated() {
        let mut headers = HeaderMap::new();
        assert_eq!(client_name(&headers), None);
        headers.insert("wxbroker-client", "orders-api.v2".parse().unwrap());
        assert_eq!(client_name(&headers), Some("orders-api.v2"));
        headers.insert("wxbroker-client", "bad name".parse().unwrap());
        assert_eq!(client_name(&headers), None);
        headers.insert("wxbroker-client", "x".repeat(65).parse().unwrap());
        assert_eq!(client_name(&headers), None);
    }

    #[test]
    fn the_one_pass_read_agrees_with_the_lookups() {
        use crate::server::request::check_not_relayed;
        let cases: &[&[(&str, &str)]] = &[
            &[],
            &[("host", "x"), ("wxbroker-client", "orders")],
            &[("wxbroker-client", "bad name")],
            &[("wxbroker-client", "first"), ("wxbroker-client", "second")],
            &[
                ("wxbroker-client", "orders"),
                ("x-forwarded-for", "10.0.0.1"),
            ],
            &[("forwarded", "for=10.0.0.1"), ("wxbroker-client", "orders")],
            &[("wxbroker-forwarded", "1")],
            &[("user-agent", "curl"), ("accept", "*/*")],
        ];
        for case in cases {
            let mut headers = HeaderMap::new();
            for (name, value) in *case {
                headers.append(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            let looked_up = check_not_relayed(&headers)
                .ok()
                .map(|()| client_name(&headers));
            assert_eq!(unrelayed_client_name(&headers), looked_up, "{case:?}");
        }
    }
}
