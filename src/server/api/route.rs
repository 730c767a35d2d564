//! A route of the token API: its `route` label, the paths it answers
//! (a pattern, see [`Params`]) and its handlers.

use std::future::Future;
use std::pin::Pin;

use http::Response;

use super::context::Ctx;
use super::params::Params;
use crate::http_io::RequestBody;
use crate::server::api_error::ApiError;
use crate::server::respond::Body;
use crate::server::state::ApiState;

/// What a handler answers.
pub(super) type Answer = Result<Response<Body>, ApiError>;

/// A route's handler: an `async fn(Ctx<'_>, RequestBody) -> Answer`,
/// boxed by [`handler!`](super::handler).
pub(super) type Handler =
    for<'a> fn(Ctx<'a>, RequestBody) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>>;

/// A route's answer without waiting, where it has one: a valid token held
/// now (the hot path), else `None` and the handler takes over. The flag
/// asks for the bare value (`?format=text`).
pub(super) type Now = for<'a> fn(&ApiState, &Params<'a>, bool) -> Option<Response<Body>>;

/// One route.
pub(super) struct Route {
    /// The `route` label of its requests' metrics.
    pub template: &'static str,
    /// The paths it answers; [`Route::new`] makes it the template.
    pub pattern: &'static str,
    /// How long the pattern's literal start is (before any `{`): most
    /// paths are refused there, and a pattern without parameters is
    /// matched there whole.
    literal: usize,
    /// Where the pattern's literal end starts (after its last `}`): a
    /// path that does not end so is refused before its segments are.
    literal_end: usize,
    /// A probe (`/livez`, `/readyz`): no client header asked for or
    /// counted.
    pub probe: bool,
    pub now: Option<Now>,
    /// The handler on the TCP and Unix listeners.
    pub local: Handler,
    /// The handler on the remote listener; without one, 404 there.
    pub remote: Option<Handler>,
}

impl Route {
    pub const fn new(template: &'static str, local: Handler) -> Self {
        Route {
            template,
            pattern: template,
            literal: literal_len(template),
            literal_end: literal_end(template),
            probe: false,
            now: None,
            local,
            remote: None,
        }
    }

    /// The route answers `pattern` (under its template's label).
    pub const fn matching(mut self, pattern: &'static str) -> Self {
        self.pattern = pattern;
        self.literal = literal_len(pattern);
        self.literal_end = literal_end(pattern);
        self
    }

    pub const fn probe(mut self) -> Self {
        self.probe = true;
        self
    }

    pub const fn now(mut self, now: Now) -> Self {
        self.now = Some(now);
        self
    }

    pub const fn remote(mut self, remote: Handler) -> Self {
        self.remote = Some(remote);
        self
    }

    /// The path's parameters, if `path` is one of this route's.
    pub fn matches<'a>(&self, path: &'a str) -> Option<Params<'a>> {
        let literal = &self.pattern.as_bytes()[..self.literal];
        if !path.as_bytes().starts_with(literal) {
            return None;
        }
        if self.literal == self.pattern.len() {
            return (path.len() == self.literal).then(Params::default);
        }
        let end = &self.pattern.as_bytes()[self.literal_end..];
        if !path.as_bytes().ends_with(end) {
            return None;
        }
        match literal.last() {
            // The rest is matched from the slash before the first parameter.
            Some(b'/') => Params::below(&self.pattern[self.literal..], &path[self.literal..]),
            _ => Params::of(self.pattern, path),
        }
    }
}

/// Where `pattern`'s literal end starts: after its last parameter's `}`
/// (its length when it ends in one, or has none).
const fn literal_end(pattern: &str) -> usize {
    let bytes = pattern.as_bytes();
    let mut at = bytes.len();
    while at > 0 && bytes[at - 1] != b'}' {
        at -= 1;
    }
    if at == 0 {
        bytes.len()
    } else {
        at
    }
}

/// Where `pattern`'s first parameter starts; its length if it has none.
/// The lone pattern `*` (every path) has no literal start.
const fn literal_len(pattern: &str) -> usize {
    let bytes = pattern.as_bytes();
    if bytes.len() == 1 && bytes[0] == b'*' {
        return 0;
    }
    let mut at = 0;
    while at < bytes.len() && bytes[at] != b'{' {
        at += 1;
    }
    at
}
