//! Which of a client's headers travel upstream, and which of upstream's
//! travel back: hop-by-hop headers never do, nor the broker's own. Every
//! call the proxy makes carries [`FORWARDED_MARK`] instead.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Marks a request the broker forwarded. A broker refuses any request
/// that carries it (a forwarding loop: an `api_base` that leads back to a
/// broker), so no request is ever forwarded twice.
pub const FORWARDED_MARK: HeaderName = HeaderName::from_static("wxbroker-forwarded");
const FORWARDED_MARK_VALUE: HeaderValue = HeaderValue::from_static("1");

/// Headers that describe one hop, not the message (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(super) fn is_hop_by_hop(name: &HeaderName, connection: &[String]) -> bool {
    HOP_BY_HOP.contains(&name.as_str()) || connection.iter().any(|listed| listed == name.as_str())
}

/// Header names the `Connection` header lists: hop-by-hop too.
pub(super) fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

/// The client's headers minus hop-by-hop ones, `Host` (the upstream's is
/// set from `api_base`), `Wxbroker-Client` and `Wxbroker-Forwarded`, the
/// length (the buffered body's is set again), `Expect` (answered here),
/// and `Accept-Encoding`: the proxy must be able to read a JSON answer for
/// a rejected token, so it asks for it uncompressed. Added: the
/// [`FORWARDED_MARK`], refused by any broker the call reaches, itself
/// included, so a loop ends at its first turn; and `Accept: */*` when the
/// client sent none, as HTTP clients do, for upstreams that look.
pub(super) fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    let connection = connection_listed(headers);
    let mut out = HeaderMap::with_capacity(headers.len() + 2);
    out.insert(FORWARDED_MARK, FORWARDED_MARK_VALUE);
    if !headers.contains_key(header::ACCEPT) {
        out.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    }
    for (name, value) in headers {
        let dropped = is_hop_by_hop(name, &connection)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::EXPECT
            || name == header::ACCEPT_ENCODING
            || name.as_str() == "wxbroker-client"
            || name == FORWARDED_MARK;
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_private_headers_are_not_forwarded() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "keep-alive, x-private".parse().unwrap());
        headers.insert("x-private", "1".parse().unwrap());
        headers.insert("host", "localhost".parse().unwrap());
        headers.insert("wxbroker-client", "svc".parse().unwrap());
        headers.insert("wxbroker-forwarded", "1".parse().unwrap());
        headers.insert("transfer-encoding", "chunked".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("x-request-id", "abc".parse().unwrap());
        let out = forwarded_headers(&headers);
        let names: Vec<_> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            [
                "wxbroker-forwarded",
                "accept",
                "content-type",
                "x-request-id"
            ]
        );
        headers.insert("accept", "application/json".parse().unwrap());
        assert_eq!(forwarded_headers(&headers)["accept"], "application/json");
    }
}
