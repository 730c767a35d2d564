//! Who can reach the daemon and what a hostile or broken client can do to
//! it (DESIGN.md section 6): the client header and relay rules, socket
//! permissions, connection and size limits, slowloris, garbage input.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wxbroker::config::Config;
use wxbroker::server::{UnixBindError, UnixSocket};
use wxbroker::simulator::SimConfig;

/// Sends raw bytes, returns whatever comes back until the server closes
/// (or 5 s pass).
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(answer: &str) -> Option<u16> {
    answer.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn tcp_requests_need_a_client_header_and_relayed_requests_are_refused() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    broker.token("shop").await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |headers: &[(&str, &str)]| {
        let mut request = client.get(broker.url("/v1/apps/shop/token"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let code = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        (
            status,
            body["error"]["code"].as_str().unwrap_or("").to_owned(),
        )
    };
    let missing = code(get(&[]).await.unwrap()).await;
    assert_eq!(missing, (412, "missing_client_header".to_owned()));
    let malformed = code(get(&[("wxbroker-client", "has spaces")]).await.unwrap()).await;
    assert_eq!(malformed, (412, "missing_client_header".to_owned()));
    for relay in ["x-forwarded-for", "forwarded"] {
        let relayed = code(
            get(&[("wxbroker-client", "svc"), (relay, "for=203.0.113.9")])
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            relayed,
            (403, "proxied_request_refused".to_owned()),
            "{relay}"
        );
    }
    // Probes need no header; the Unix socket needs none either.
    assert_eq!(get(&[]).await.unwrap().status(), 412);
    let live = client.get(broker.url("/livez")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let (status, _) = broker
        .unix(http::Method::GET, "/v1/apps/shop/token", None)
        .await;
    assert_eq!(status, 200);
}

#[test]
fn a_non_loopback_listen_needs_the_client_header_and_is_warned_about() {
    let app = "[[apps]]\nname = \"shop\"\nappid = \"wx1\"\nsecret = \"s3cr3t-value\"\n";
    let open = format!("[server]\nlisten = \"0.0.0.0:8930\"\nrequire_client_header = false\n{app}");
    let err = Config::from_toml_str("open.toml", &open).unwrap_err();
    assert!(
        err.to_string().contains("server.require_client_header"),
        "{err}"
    );
    let guarded = format!("[server]\nlisten = \"0.0.0.0:8930\"\n{app}");
    let config = Config::from_toml_str("guarded.toml", &guarded).unwrap();
    let warnings = config.warnings().join("\n");
    assert!(warnings.contains("server.listen"), "{warnings}");
}

#[tokio::test]
async fn the_unix_socket_gets_its_mode_and_group_and_stale_files_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let socket = UnixSocket::bind(&path, 0o640, Some("root")).await.unwrap();
    let metadata = std::fs::metadata(&path).unwrap();
    assert_eq!(metadata.permissions().mode() & 0o777, 0o640);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&metadata), 0);
    // A live socket is never taken over.
    assert!(matches!(
        UnixSocket::bind(&path, 0o640, None).await,
        Err(UnixBindError::InUse(_))
    ));
    drop(socket);
    UnixSocket::bind(&path, 0o600, None)
        .await
        .expect("a stale socket is replaced");
    let unknown = dir.path().join("other.sock");
    let err = UnixSocket::bind(&unknown, 0o600, Some("no-such-group-here"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-group-here"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_after_idle_timeout() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start_with(
        &classic_app("shop", &sim, ""),
        Options {
            server: "idle_timeout = \"1s\"".into(),
            ..Options::default()
        },
    )
    .await;
    broker.token("shop").await;
    // Slowloris: half a request head, then silence.
    let started = Instant::now();
    let answer = raw_exchange(broker.tcp, b"GET /v1/token HTTP/1.1\r\nHost: x\r\n").await;
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_secs(4),
        "closed after {held:?}: {answer:?}"
    );
    // An idle keep-alive connection is closed too.
    let mut stream = TcpStream::connect(broker.tcp).await.unwrap();
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = vec![0; 4096];
    let n = stream.read(&mut buffer).await.unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&buffer[..n])), Some(200));
    let closed = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            if stream.read(&mut buffer).await.unwrap_or(0) == 0 {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle connection was closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_back_new_connections_not_the_process() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start_with(
        &classic_app("shop", &sim, ""),
        Options {
            server: "max_connections = 4\nidle_timeout = \"1s\"".into(),
            ..Options::default()
        },
    )
    .await;
    // Fresh connections only: a pooled one would hold a permit of its own.
    let fresh = || {
        reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let get_token = || async {
        let response = fresh()
            .get(broker.url("/v1/apps/shop/token?format=text"))
            .header("wxbroker-client", "tests")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    };
    get_token().await;
    // Four silent connections take every permit.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(broker.tcp).await.unwrap());
    }
    // The fifth waits in the backlog until the idle ones time out.
    let started = Instant::now();
    let token = within(get_token()).await;
    assert!(sim.sim.token_valid(&token));
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "served before any permit was free: {:?}",
        started.elapsed()
    );
    // The operations listener has its own limit: probes still get through.
    let metrics = broker.metrics_text().await;
    assert!(metrics.contains("wxbroker_build_info"));
}

#[tokio::test]
async fn oversized_heads_and_garbage_get_clean_errors() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start(&classic_app("shop", &sim, "")).await;
    broker.token("shop").await;
    let huge = format!(
        "GET /v1/token HTTP/1.1\r\nHost: x\r\nWxbroker-Client: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    let answer = raw_exchange(broker.tcp, huge.as_bytes()).await;
    assert_eq!(status_of(&answer), Some(431), "{answer:.200}");
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = raw_exchange(
        broker.tcp,
        format!("GET /v1/token HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&answer), Some(431), "{answer:.200}");
    let answer = raw_exchange(broker.tcp, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").await;
    assert_eq!(status_of(&answer), Some(400), "{answer:.200}");
    let answer = raw_exchange(
        broker.tcp,
        b"GET /v1/apps/\xff\xfe/token HTTP/1.1\r\nHost: x\r\nWxbroker-Client: t\r\n\r\n",
    )
    .await;
    assert!(
        matches!(status_of(&answer), Some(400 | 404)),
        "{answer:.200}"
    );
    let answer = raw_exchange(
        broker.tcp,
        b"GET /v1/apps/../../etc/passwd HTTP/1.1\r\nHost: x\r\nWxbroker-Client: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), Some(404), "{answer:.200}");
    assert!(!answer.contains("root:"), "{answer:.200}");
}

/// A well-behaved client keeps getting its token, with no error, while
/// hostile clients throw everything at the daemon at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_crowd_does_not_disturb_a_well_behaved_client() {
    let sim = simulator(SimConfig::default()).await;
    let broker = std::sync::Arc::new(
        Broker::start_with(
            &classic_app("shop", &sim, ""),
            Options {
                server: "idle_timeout = \"2s\"".into(),
                ..Options::default()
            },
        )
        .await,
    );
    let token = broker.token("shop").await;
    let addr = broker.tcp;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    // 300 connections that never send a byte.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let hostile = [
        b"\x00\x01\x02\x03 nonsense\r\n\r\n".to_vec(),
        format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(40_000)).into_bytes(),
        b"GET /v1/apps/%2e%2e/token HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET /v1/apps/\xc3\x28/token HTTP/1.1\r\nHost: x\r\nWxbroker-Client: x\r\n\r\n".to_vec(),
        b"POST /v1/apps/shop/token/invalidate HTTP/1.1\r\nHost: x\r\nWxbroker-Client: x\r\nContent-Length: 99999999\r\n\r\n{".to_vec(),
        b"GET /v1/token HTTP/1.1\r\nHost: x\r\n".to_vec(),
        b"GET /v1/token HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\nWxbroker-Client: x\r\n\r\n".to_vec(),
    ];
    let attackers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, hostile) = (stop.clone(), hostile.clone());
            tokio::spawn(async move {
                let mut sent = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 2000 {
                    let request = &hostile[sent as usize % hostile.len()];
                    let _ = tokio::time::timeout(
                        Duration::from_millis(300),
                        raw_exchange(addr, request),
                    )
                    .await;
                    sent += 1;
                }
                sent
            })
        })
        .collect();

    let mut served = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let (status, body) = broker.get("/v1/apps/shop/token").await;
        assert_eq!(status, 200, "the well-behaved client failed: {body}");
        assert_eq!(body["access_token"], token.as_str());
        served += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut thrown = 0;
    for attacker in attackers {
        thrown += within(attacker).await.unwrap();
    }
    assert!(served > 50, "only {served} good requests");
    assert!(thrown > 20, "only {thrown} hostile requests");
    assert_eq!(sim.sim.total_token_calls(), 1);
    drop(idle);
}

/// A client whose every request waits in the backlog behind `max_connections`:
/// one fresh connection per request.
async fn fresh_token(broker: &Broker, app: &str) -> String {
    let response = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .get(broker.url(&format!("/v1/apps/{app}/token?format=text")))
        .header("wxbroker-client", "tests")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_sent_a_byte_at_a_time_are_cut_off_at_the_body_timeout() {
    let sim = simulator(SimConfig::default()).await;
    let broker = Broker::start_with(
        &classic_app("shop", &sim, ""),
        Options {
            server: "max_connections = 4\nbody_timeout = \"2s\"".into(),
            ..Options::default()
        },
    )
    .await;
    broker.token("shop").await;
    // Four clients take every permit, each sending a body one byte every
    // 200 ms: two to a token route, two to the proxy.
    let paths = [
        "/v1/apps/shop/token/invalidate",
        "/v1/apps/shop/proxy/cgi-bin/message/custom/send",
    ];
    let (connected_tx, mut connected) = tokio::sync::mpsc::channel(4);
    let trickles: Vec<_> = (0..4)
        .map(|i| {
            let connected_tx = connected_tx.clone();
            let head = format!(
                "POST {} HTTP/1.1\r\nHost: x\r\nWxbroker-Client: slow\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
                paths[i % 2]
            );
            let addr = broker.tcp;
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                stream.write_all(head.as_bytes()).await.unwrap();
                connected_tx.send(()).await.unwrap();
                let started = Instant::now();
                // Bounded: 1000 bytes would take 200 s; the test gives up at 100.
                for _ in 0..100 {
                    if stream.write_all(b" ").await.is_err() {
                        break;
                    }
                    let mut answer = vec![0; 4096];
                    if let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_millis(200), stream.read(&mut answer))
                            .await
                    {
                        return (started.elapsed(), String::from_utf8_lossy(&answer[..n]).into_owned());
                    }
                }
                (started.elapsed(), String::new())
            })
        })
        .collect();
    // The backlog is first in, first out: once the four are connected,
    // they are ahead of the well-behaved client.
    for _ in 0..4 {
        within(connected.recv()).await.unwrap();
    }
    let started = Instant::now();
    let token = within(fresh_token(&broker, "shop")).await;
    assert!(sim.sim.token_valid(&token));
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "served after {waited:?}");
    for trickle in trickles {
        let (held, answer) = within(trickle).await.unwrap();
        assert_eq!(status_of(&answer), Some(408), "after {held:?}: {answer:?}");
        assert!(held < Duration::from_secs(5), "held for {held:?}");
    }
}

/// An upstream that issues a classic token and answers every other path
/// with [`BIG_ANSWER`] bytes of `application/octet-stream`, as fast as the
/// broker takes them. Stops (with its connections) when dropped.
struct BigUpstream {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

const BIG_ANSWER: usize = 32 * 1024 * 1024;

impl BigUpstream {
    async fn start() -> BigUpstream {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let big = bytes::Bytes::from(vec![b'x'; BIG_ANSWER]);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let big = big.clone();
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (body, kind) = if request.uri().path() == "/cgi-bin/token" {
                        (
                            bytes::Bytes::from_static(
                                b"{\"access_token\":\"big-upstream-token-0123456789\",\"expires_in\":7200}",
                            ),
                            "application/json",
                        )
                    } else {
                        (big.clone(), "application/octet-stream")
                    };
                    async move {
                        let mut response = http::Response::new(http_body_util::Full::new(body));
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static(kind),
                        );
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                connections.spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        BigUpstream { addr, task }
    }
}

impl Drop for BigUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_a_large_answer_are_cut_off() {
    let upstream = BigUpstream::start().await;
    let app = format!(
        "[[apps]]\nname = \"big\"\nappid = \"{APPID}\"\nsecret = \"{SECRET}\"\napi_base = \"http://{}\"\n",
        upstream.addr
    );
    let broker = Broker::start_with(
        &app,
        Options {
            server: "max_connections = 3\nwrite_timeout = \"1s\"".into(),
            ..Options::default()
        },
    )
    .await;
    // A fresh connection: a pooled one would keep a permit of its own.
    fresh_token(&broker, "big").await;
    // Three clients take every permit, ask for the large answer, and read
    // none of it.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(broker.tcp).await.unwrap();
        stream
            .write_all(b"GET /v1/apps/big/proxy/media/big.bin HTTP/1.1\r\nHost: x\r\nWxbroker-Client: stalled\r\n\r\n")
            .await
            .unwrap();
        stalled.push(stream);
    }
    let started = Instant::now();
    within(fresh_token(&broker, "big")).await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(8), "served after {waited:?}");
    // Each stalled client is cut off in its turn (a read now would make
    // progress and restart its clock): wait until none is open.
    let deadline = Instant::now() + WAIT;
    while broker
        .metric("wxbroker_connections_open{listener=\"tcp\"}")
        .await
        != 0.0
    {
        assert!(Instant::now() < deadline, "stalled clients never cut off");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What the stalled clients find when they finally read: what the
    // socket buffers held, then the end, never the whole answer.
    for mut stream in stalled {
        let mut received = 0;
        let mut buffer = vec![0; 256 * 1024];
        within(async {
            while let Ok(n @ 1..) = stream.read(&mut buffer).await {
                received += n;
            }
        })
        .await;
        assert!(received < BIG_ANSWER, "got all {received} bytes");
    }
}

/// With few file descriptors and a `max_connections` far beyond them, a
/// flood of connections leaves room for the probes, and failed accepts
/// (if any) do not flood the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_under_a_small_open_file_limit_leaves_livez_up() {
    let sim = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (api, ops) = (free_port(), free_port());
    let config = dir.path().join("wxbroker.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{api}\"\nmetrics_listen = \"127.0.0.1:{ops}\"\n\
             max_connections = 1024\nidle_timeout = \"60s\"\n[store]\nbackend = \"memory\"\n{}",
            classic_app("shop", &sim, "")
        ),
    )
    .unwrap();
    // prlimit(1) sets the limit before exec: the test cannot run code in
    // the child itself without `unsafe`.
    let output = dir.path().join("wxbroker.log");
    let log = std::fs::File::create(&output).unwrap();
    let child = tokio::process::Command::new("prlimit")
        .arg("--nofile=256:256")
        .arg("--")
        .arg(support::process::BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("prlimit (util-linux) runs wxbroker");
    let mut broker = support::process::Process { child, output };
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let livez = format!("http://127.0.0.1:{ops}/livez");
    let deadline = Instant::now() + WAIT;
    while !client
        .get(&livez)
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            Instant::now() < deadline && broker.child.try_wait().unwrap().is_none(),
            "never live:\n{}",
            broker.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // More connections than the daemon has descriptors, all held open,
    // until the listen backlog is full too (connects then hang).
    let mut flood = Vec::new();
    for _ in 0..600 {
        let connect = TcpStream::connect(("127.0.0.1", api));
        match tokio::time::timeout(Duration::from_millis(500), connect).await {
            Ok(Ok(stream)) => flood.push(stream),
            _ => break,
        }
    }
    assert!(flood.len() > 150, "only {} connections", flood.len());
    // Twelve probes, a fresh connection each, over about three seconds.
    let mut failed = Vec::new();
    for _ in 0..12 {
        match client.get(&livez).send().await {
            Ok(response) if response.status() == 200 => {}
            other => failed.push(format!("{other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let output = broker.output();
    assert!(
        failed.is_empty(),
        "{} probes failed: {failed:?}\n{output}",
        failed.len()
    );
    assert!(
        output.contains("max_connections exceeds what the open-file limit allows"),
        "{output}"
    );
    let accept_failures = output.matches("accept failed").count();
    assert!(
        accept_failures <= 4,
        "{accept_failures} accept failure lines:\n{output}"
    );
    drop(flood);
    broker.terminate().await;
    broker.wait().await;
}

/// The daemon's anonymous resident memory (its heap; the binary's own
/// pages are left out), in KiB.
fn rss_anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/PID/status")
}

/// An idle keep-alive connection holds little more than its socket: once
/// the daemon has put their HTTP state down (hyper's read and write
/// buffers alone are 16 KiB a connection), connections that each made one
/// request and went quiet cost it at most 8 KiB apiece.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_cost_at_most_8_kib_each() {
    const CONNECTIONS: u64 = 400;
    let sim = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (api, ops) = (free_port(), free_port());
    let config = dir.path().join("wxbroker.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{api}\"\nmetrics_listen = \"127.0.0.1:{ops}\"\n\
             max_connections = 1024\nidle_timeout = \"300s\"\n[store]\nbackend = \"memory\"\n{}",
            classic_app("shop", &sim, "")
        ),
    )
    .unwrap();
    let mut broker = ChildBroker::spawn(&config, "info");
    let token = format!("http://127.0.0.1:{api}/v1/apps/shop/token");
    broker.wait_ready(&token).await;
    let pid = broker.child.id();
    let before = rss_anon_kib(pid);
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(("127.0.0.1", api)).await.unwrap();
        stream
            .write_all(
                b"GET /v1/apps/shop/token HTTP/1.1\r\nHost: x\r\nWxbroker-Client: tests\r\n\r\n",
            )
            .await
            .unwrap();
        let mut buffer = vec![0; 4096];
        let n = within(stream.read(&mut buffer)).await.unwrap();
        let answer = String::from_utf8_lossy(&buffer[..n]).into_owned();
        assert_eq!(status_of(&answer), Some(200), "{answer}");
        held.push(stream);
    }
    // The allocator hands freed pages back within seconds, not at once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let per_connection = loop {
        let per_connection = rss_anon_kib(pid).saturating_sub(before) / CONNECTIONS;
        if per_connection <= 8 || Instant::now() > deadline {
            break per_connection;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        per_connection <= 8,
        "{per_connection} KiB per idle connection ({before} KiB before, {} KiB now)",
        rss_anon_kib(pid)
    );
    // Still keep-alive: each connection answers its next request.
    for stream in held.iter_mut().take(10) {
        stream
            .write_all(
                b"GET /v1/apps/shop/token HTTP/1.1\r\nHost: x\r\nWxbroker-Client: tests\r\n\r\n",
            )
            .await
            .unwrap();
        let mut buffer = vec![0; 4096];
        let n = within(stream.read(&mut buffer)).await.unwrap();
        assert_eq!(status_of(&String::from_utf8_lossy(&buffer[..n])), Some(200));
    }
    assert!(broker.terminate().success());
}
