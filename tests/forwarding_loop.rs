//! Forwarding loops on loopback: every call the proxy makes is marked
//! (`Wxbroker-Forwarded: 1`), a marked request is refused at once on
//! every API and compatible listener, and an `api_base` or `connect_to`
//! that reaches one of the broker's own listeners is refused at start and
//! at reload, naming the key.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;
use support::scripted::{Answer, ScriptedUpstream};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wxbroker::config::Config;
use wxbroker::server::UnixSocket;
use wxbroker::simulator::SimConfig;
use wxbroker::{Listeners, StartError, Tuning};

/// How long a refused loop may take: one extra hop on loopback.
const PROMPT: Duration = Duration::from_secs(3);

/// A gateway in front of "WeChat" that no configuration check can see
/// through: connections whose first request fetches a credential go to
/// `tokens` (the simulator), every other one to `rest`, set once the
/// broker is bound; here that is the broker's own compatible listener,
/// which closes the loop.
async fn split_gateway(tokens: SocketAddr, rest: Arc<OnceLock<SocketAddr>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let rest = rest.clone();
            tokio::spawn(async move {
                let mut first = vec![0u8; 16 * 1024];
                let n = match inbound.read(&mut first).await {
                    Ok(n) if n > 0 => n,
                    _ => return,
                };
                let head = String::from_utf8_lossy(&first[..n]);
                let line = head.lines().next().unwrap_or_default();
                let credential = ["/cgi-bin/token", "/cgi-bin/stable_token", "/cgi-bin/ticket"]
                    .iter()
                    .any(|path| line.contains(path));
                let to = if credential {
                    tokens
                } else {
                    *rest.get().expect("the broker is bound")
                };
                let Ok(mut outbound) = TcpStream::connect(to).await else {
                    return;
                };
                if outbound.write_all(&first[..n]).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

fn is_refused_loop(body: &Value) -> bool {
    body["errcode"] == -1
        && body["errmsg"]
            .as_str()
            .is_some_and(|errmsg| errmsg.contains("forwarding loop"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_back_through_a_gateway_is_refused_at_its_first_turn() {
    let sim = simulator(SimConfig::default()).await;
    let sim_addr: SocketAddr = sim
        .base_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let compat = Arc::new(OnceLock::new());
    let gateway = split_gateway(sim_addr, compat.clone()).await;
    // Without the mark, each turn of the loop would take two more of the
    // 16 connections until none is left, and the first call would hang
    // for the proxy's 30 s.
    let app = classic_app("shop", &sim, "").replace(&sim.base_url(), &format!("http://{gateway}"));
    let broker = Broker::start_with(
        &app,
        Options {
            server: "max_connections = 16".into(),
            compat: true,
            ..Options::default()
        },
    )
    .await;
    compat.set(broker.compat.unwrap()).unwrap();
    let token = broker.token("shop").await;

    // Through the /v1 proxy: forwarded once, refused by the broker
    // itself on the way back in.
    let started = Instant::now();
    let (status, _, body) = broker
        .send(
            Method::GET,
            "/v1/apps/shop/proxy/cgi-bin/menu/get",
            &[],
            None,
        )
        .await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(is_refused_loop(&body), "{body}");
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());

    // Through the compatible listener, as an SDK would call it.
    let started = Instant::now();
    let response = within(
        broker
            .http()
            .get(broker.compat_url(&format!("/cgi-bin/menu/get?access_token={token}")))
            .send(),
    )
    .await
    .unwrap();
    let body: Value = response.json().await.unwrap();
    assert!(is_refused_loop(&body), "{body}");
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());

    // The local API kept answering throughout.
    let (status, _) = tokio::time::timeout(
        PROMPT,
        broker.unix(Method::GET, "/v1/apps/shop/token", None),
    )
    .await
    .expect("the Unix socket answers");
    assert_eq!(status, 200);
    assert_eq!(broker.token("shop").await, token);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forwarded_call_is_marked_and_a_marked_request_is_refused() {
    let upstream = ScriptedUpstream::start(|_, request| {
        if request.target.starts_with("/cgi-bin/token") {
            Answer::json(r#"{"access_token":"scripted-token-0123456789abcdef","expires_in":7200}"#)
        } else {
            Answer::json(r#"{"errcode":0,"errmsg":"ok"}"#)
        }
    })
    .await;
    let app = format!(
        "[[apps]]\nname = \"shop\"\nappid = \"{APPID}\"\nsecret = \"{SECRET}\"\napi_base = \"{}\"\n",
        upstream.base_url()
    );
    let broker = Broker::start_with(
        &app,
        Options {
            compat: true,
            ..Options::default()
        },
    )
    .await;
    broker.token("shop").await;
    // A client's own mark is not what goes upstream: the broker's is.
    let (status, _, _) = broker
        .send(
            Method::POST,
            "/v1/apps/shop/proxy/cgi-bin/menu/create",
            &[],
            Some(b"{}"),
        )
        .await;
    assert_eq!(status, 200);
    let forwarded = upstream
        .requests()
        .into_iter()
        .find(|request| request.target.starts_with("/cgi-bin/menu/create"))
        .expect("the call was forwarded");
    assert_eq!(forwarded.header("wxbroker-forwarded"), Some("1"));

    // A marked request is refused on /v1, on TCP and on the Unix socket...
    let before = upstream.count();
    let marked = [("wxbroker-forwarded", "1")];
    for path in [
        "/v1/apps/shop/token",
        "/v1/apps/shop/proxy/cgi-bin/menu/get",
    ] {
        let (status, _, body) = broker.send(Method::GET, path, &marked, None).await;
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 508, "{path}: {body}");
        assert_eq!(body["error"]["code"], "forwarding_loop", "{body}");
    }
    let mut unix = tokio::net::UnixStream::connect(&broker.socket)
        .await
        .unwrap();
    unix.write_all(
        b"GET /v1/apps/shop/token HTTP/1.1\r\nHost: x\r\nWxbroker-Forwarded: 1\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut reply = String::new();
    within(unix.read_to_string(&mut reply)).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 508"), "{reply}");
    assert!(reply.contains("forwarding_loop"), "{reply}");
    // ...and, WeChat-shaped, on the compatible listener.
    let response = within(
        broker
            .http()
            .get(broker.compat_url("/cgi-bin/menu/get?access_token=x"))
            .header("wxbroker-forwarded", "1")
            .send(),
    )
    .await
    .unwrap();
    let body: Value = response.json().await.unwrap();
    assert!(is_refused_loop(&body), "{body}");
    assert_eq!(upstream.count(), before, "a marked request went upstream");
    broker.stop().await;
}

/// The API listeners and a compatible listener, bound on loopback as the
/// daemon's caller binds them; the compatible listener's port is known
/// before the configuration is written.
async fn bind(dir: &std::path::Path) -> (Listeners, u16) {
    let compat = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = compat.local_addr().unwrap().port();
    let listeners = Listeners {
        api_tcp: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
        api_unix: Some(
            UnixSocket::bind(&dir.join("wxbroker.sock"), 0o600, None)
                .await
                .unwrap(),
        ),
        compat: Some(compat),
        ..Listeners::default()
    };
    (listeners, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_base_reaching_an_own_listener_is_refused_at_start_and_at_reload() {
    let sim = simulator(SimConfig::default()).await;
    let text = |api_base: &str, upstream: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nwechat_compat_listen = \"127.0.0.1:0\"\n\n[store]\nbackend = \"memory\"\n\n{}\n{upstream}",
            classic_app("shop", &sim, "").replace(&sim.base_url(), api_base)
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let (listeners, port) = bind(dir.path()).await;
    let looped = Config::from_toml_str(
        "looped.toml",
        &text(&format!("http://127.0.0.1:{port}"), ""),
    )
    .expect("port 0 in the file: nothing to judge before binding");
    let err = match wxbroker::start_with(&looped, listeners, Tuning::default()).await {
        Err(StartError::Config(err)) => err,
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a broker forwarding to itself started"),
    };
    assert_eq!(err.key(), Some("apps.shop.api_base"), "{err}");
    assert!(
        err.to_string().contains("server.wechat_compat_listen"),
        "{err}"
    );

    // A good configuration starts; a reload that loops is refused whole.
    let dir = tempfile::tempdir().unwrap();
    let (listeners, port) = bind(dir.path()).await;
    let good = Config::from_toml_str("good.toml", &text(&sim.base_url(), "")).unwrap();
    let daemon = wxbroker::start_with(&good, listeners, Tuning::default())
        .await
        .expect("starts");
    let pinned = Config::from_toml_str(
        "pinned.toml",
        &text(
            "https://api.weixin.qq.com",
            &format!("[upstream]\nconnect_to = {{ \"api.weixin.qq.com\" = \"127.0.0.1:{port}\" }}"),
        ),
    )
    .expect("the pin names no fixed listener port");
    let err = within(daemon.reload(&pinned)).await.unwrap_err();
    assert_eq!(
        err.key(),
        Some("upstream.connect_to.api.weixin.qq.com"),
        "{err}"
    );
    let looped = Config::from_toml_str(
        "looped.toml",
        &text(&format!("http://localhost:{port}/"), ""),
    )
    .unwrap();
    let err = within(daemon.reload(&looped)).await.unwrap_err();
    assert_eq!(err.key(), Some("apps.shop.api_base"), "{err}");
    // Still the good configuration's app, still serving.
    let app = daemon.broker.app("shop").unwrap();
    assert_eq!(app.config().api_base, sim.base_url());
    within(daemon.shutdown()).await;
}
