//! Upstreams that are the broker itself. An `api_base` (of an app, a
//! platform or a suite) or an `[upstream] connect_to` address that reaches one of
//! the broker's own listeners turns every forwarded call into a loop: the
//! compatible listener forwards to itself until its connections run out.
//! Such a configuration is refused when it is read (for listeners with a
//! fixed port), when the daemon starts (against the addresses it really
//! bound) and at every reload.
//!
//! Only what the configuration says can be judged here: IP literals,
//! `localhost` and `connect_to` pins. A name that the hosts file or DNS
//! points back at the broker is caught at run time instead, by the mark
//! every forwarded request carries (see the proxy).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

use super::error::Problem;
use super::urls::masked;
use super::{
    AppConfig, Config, ConfigError, PlatformConfig, ServerConfig, SuiteConfig, UpstreamConfig,
};

/// One of the broker's TCP listeners: the key that sets it, and where it
/// listens.
pub type OwnListener = (String, SocketAddr);

impl Config {
    /// Refuses an `api_base` or `connect_to` that reaches one of `own`
    /// (the listeners the daemon bound); the error names the key.
    pub fn check_upstreams_avoid(&self, own: &[OwnListener]) -> Result<(), ConfigError> {
        upstreams_avoid(
            &self.upstream,
            &self.apps,
            &self.platforms,
            &self.suites,
            own,
        )
        .map_err(|problem| problem.into_error(&self.source))
    }
}

/// The listeners the configuration fixes an address for: port 0 (any
/// free port) has none until bound.
pub(super) fn configured_listeners(server: &ServerConfig, apps: &[AppConfig]) -> Vec<OwnListener> {
    let server_listeners = [
        ("server.listen", server.listen),
        ("server.metrics_listen", server.metrics_listen),
        ("server.wechat_compat_listen", server.wechat_compat_listen),
        ("server.remote_listen", server.remote_listen),
        ("server.callback_listen", server.callback_listen),
    ]
    .into_iter()
    .filter_map(|(key, addr)| Some((key.to_owned(), addr?)));
    let app_listeners = apps.iter().filter_map(|app| {
        Some((
            format!("apps.{}.compat_listen", app.name),
            app.compat_listen?,
        ))
    });
    server_listeners
        .chain(app_listeners)
        .filter(|(_, addr)| addr.port() != 0)
        .collect()
}

/// Every upstream the broker calls, checked against `own`.
pub(super) fn upstreams_avoid(
    upstream: &UpstreamConfig,
    apps: &[AppConfig],
    platforms: &[PlatformConfig],
    suites: &[SuiteConfig],
    own: &[OwnListener],
) -> Result<(), Problem> {
    for (host, addr) in &upstream.connect_to {
        // Port 0 takes the port of each URL naming the host: judged with
        // those URLs below.
        if addr.port() != 0 {
            refuse_if_own(
                &format!("upstream.connect_to.{host}"),
                &addr.to_string(),
                *addr,
                own,
            )?;
        }
    }
    let bases = apps
        .iter()
        .map(|app| (format!("apps.{}.api_base", app.name), &app.api_base))
        .chain(platforms.iter().map(|platform| {
            (
                format!("platforms.{}.api_base", platform.name),
                &platform.api_base,
            )
        }))
        .chain(
            suites
                .iter()
                .map(|suite| (format!("suites.{}.api_base", suite.name), &suite.api_base)),
        );
    for (key, base) in bases {
        for target in targets(base, &upstream.connect_to) {
            refuse_if_own(&key, &masked(base), target, own)?;
        }
    }
    Ok(())
}

fn refuse_if_own(
    key: &str,
    shown: &str,
    target: SocketAddr,
    own: &[OwnListener],
) -> Result<(), Problem> {
    match own.iter().find(|(_, listener)| reaches(target, *listener)) {
        None => Ok(()),
        Some((listener_key, listener)) => Err(Problem::new(
            key,
            format!(
                "{shown} reaches this broker's own {listener_key} ({listener}): every call \
                 forwarded there would come back to the broker; point it at WeChat"
            ),
        )),
    }
}

/// Where a connection to `base` goes, as far as the configuration alone
/// tells: a `connect_to` pin for its host, an IP literal, or `localhost`.
/// Other names are left to the resolver (and to the forwarding mark).
fn targets(base: &str, connect_to: &[(String, SocketAddr)]) -> Vec<SocketAddr> {
    let Ok(url) = Url::parse(base) else {
        return Vec::new();
    };
    let Some(port) = url.port_or_known_default() else {
        return Vec::new();
    };
    let ips: Vec<IpAddr> = match url.host() {
        Some(Host::Domain(domain)) => {
            if let Some((_, pinned)) = connect_to.iter().find(|(host, _)| host == domain) {
                let port = if pinned.port() == 0 {
                    port
                } else {
                    pinned.port()
                };
                return vec![SocketAddr::new(pinned.ip(), port)];
            }
            if domain == "localhost" {
                vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
            } else {
                Vec::new()
            }
        }
        Some(Host::Ipv4(ip)) => vec![ip.into()],
        Some(Host::Ipv6(ip)) => vec![ip.into()],
        None => Vec::new(),
    };
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// Whether a connection to `target` lands on a listener bound at
/// `listener`. A listener on the unspecified address (`0.0.0.0`, `[::]`)
/// takes connections to every local address, loopback included; a
/// connection to the unspecified address goes to the local host. The
/// host's other interface addresses are not known here.
fn reaches(target: SocketAddr, listener: SocketAddr) -> bool {
    if target.port() != listener.port() {
        return false;
    }
    let target = target.ip().to_canonical();
    let listener = listener.ip().to_canonical();
    let local = |ip: IpAddr| ip.is_loopback() || ip.is_unspecified();
    if listener.is_unspecified() {
        // `[::]` also takes IPv4 unless the socket is IPv6-only, which
        // the broker does not set.
        let same_family = target.is_ipv4() == listener.is_ipv4() || listener.is_ipv6();
        return same_family && local(target);
    }
    target == listener || (target.is_unspecified() && listener.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_listener_is_reached_at_its_address_or_through_the_unspecified_one() {
        for (target, listener, reached) in [
            ("127.0.0.1:8931", "127.0.0.1:8931", true),
            ("127.0.0.1:8931", "127.0.0.1:8932", false),
            ("127.0.0.1:8931", "0.0.0.0:8931", true),
            ("0.0.0.0:8931", "127.0.0.1:8931", true),
            ("127.0.0.1:8931", "[::]:8931", true),
            ("[::1]:8931", "[::]:8931", true),
            ("[::ffff:127.0.0.1]:8931", "127.0.0.1:8931", true),
            ("[::1]:8931", "0.0.0.0:8931", false),
            ("127.0.0.2:8931", "127.0.0.1:8931", false),
            ("10.0.0.7:8931", "0.0.0.0:8931", false),
            ("10.0.0.7:8931", "10.0.0.7:8931", true),
        ] {
            assert_eq!(
                reaches(addr(target), addr(listener)),
                reached,
                "{target} -> {listener}"
            );
        }
    }

    #[test]
    fn targets_come_from_literals_localhost_and_pins() {
        let pins = vec![
            ("api.weixin.qq.com".to_owned(), addr("127.0.0.1:9000")),
            ("qyapi.weixin.qq.com".to_owned(), addr("127.0.0.1:0")),
        ];
        assert_eq!(
            targets("http://127.0.0.1:8931", &pins),
            [addr("127.0.0.1:8931")]
        );
        assert_eq!(targets("http://127.0.0.1", &pins), [addr("127.0.0.1:80")]);
        assert_eq!(targets("https://[::1]/wx", &pins), [addr("[::1]:443")]);
        assert_eq!(
            targets("http://localhost:7", &pins),
            [addr("127.0.0.1:7"), addr("[::1]:7")]
        );
        assert_eq!(
            targets("https://api.weixin.qq.com", &pins),
            [addr("127.0.0.1:9000")]
        );
        assert_eq!(
            targets("https://qyapi.weixin.qq.com", &pins),
            [addr("127.0.0.1:443")]
        );
        assert!(targets("https://example.com:8931", &pins).is_empty());
        assert!(targets("not a url", &pins).is_empty());
    }
}
