//! `[upstream]`: how the broker's own calls reach WeChat (the resolver,
//! and `connect_to` pins from a host name to an address).

use crate::config::error::Problem;
use crate::config::fields::socket_addr;
use crate::config::raw::RawUpstream;
use crate::config::{Resolve, UpstreamConfig};

/// `[upstream]`.
pub(super) fn upstream(raw: RawUpstream) -> Result<UpstreamConfig, Problem> {
    let resolve = match raw.resolve.as_deref() {
        None | Some("system") => Resolve::System,
        Some("dns") => Resolve::Dns,
        Some(other) => {
            return Err(Problem::new(
                "upstream.resolve",
                format!("\"{other}\" is not one of system, dns"),
            ))
        }
    };
    let mut connect_to = Vec::new();
    for (host, addr) in raw.connect_to.unwrap_or_default() {
        let key = format!("upstream.connect_to.{host}");
        let valid_host = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
        if !valid_host {
            return Err(Problem::new(key, "is not a host name"));
        }
        let addr = socket_addr(&key, Some(addr))?.expect("a value was given");
        connect_to.push((host.to_ascii_lowercase(), addr));
    }
    Ok(UpstreamConfig {
        resolve,
        connect_to,
    })
}
