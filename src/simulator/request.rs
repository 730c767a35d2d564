//! A request as the simulator's handlers see it, read whole by the router,
//! and the fault that makes the router drop a connection unanswered. Its
//! own module, so the router depends on its handlers and neither on the
//! other.

use std::fmt;
use std::net::IpAddr;

use bytes::Bytes;
use hyper::Method;

/// A fully read request, as the handlers see it.
pub(crate) struct SimRequest {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub peer: IpAddr,
}

/// Returned by the service to make hyper close the connection without an
/// answer (the `DropConnection` fault).
#[derive(Debug)]
pub(crate) struct DropConnection;

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by injected fault")
    }
}

impl std::error::Error for DropConnection {}
