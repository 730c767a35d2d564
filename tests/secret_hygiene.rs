//! Rule 9: the app secret never appears in a log line, a metric, an error
//! body or `check-config` output, and a token only in token responses. The
//! real binary runs at debug level through every error path while every
//! answer it gives and every line it logs are collected and searched.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use support::*;
use wxbroker::simulator::{Fault, SimConfig, Simulator};

/// Everything the daemon said to anyone.
#[derive(Default)]
struct Transcript {
    /// Answers that may carry a token (token routes, 200).
    token_answers: Vec<String>,
    /// Every other answer.
    other_answers: Vec<String>,
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        transcript: &mut Transcript,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, String) {
        let request = match method {
            "POST" => self
                .client
                .post(format!("{}{path}", self.base))
                .body(body.to_owned()),
            _ => self.client.get(format!("{}{path}", self.base)),
        };
        let response = within(request.header("wxbroker-client", "hygiene").send())
            .await
            .expect("broker answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let is_token_route = path.contains("/token") && !path.contains("/proxy/");
        if status == 200 && is_token_route {
            transcript.token_answers.push(text.clone());
        } else {
            transcript.other_answers.push(text.clone());
        }
        (status, text)
    }
}

fn token_of(answer: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(answer).ok()?;
    value["access_token"].as_str().map(str::to_owned)
}

fn inject_every_fault(sim: &Simulator) {
    for fault in [
        Fault::Errcode {
            errcode: -1,
            count: 2,
        },
        Fault::Http500Html { count: 1 },
        Fault::MalformedJson { count: 1 },
        Fault::DropConnection { count: 1 },
        Fault::Delay {
            delay: Duration::from_millis(1500),
            count: 1,
        },
        Fault::Errcode {
            errcode: 40164,
            count: 1,
        },
        Fault::Errcode {
            errcode: 45009,
            count: 1,
        },
        Fault::Errcode {
            errcode: 40125,
            count: 1,
        },
    ] {
        sim.inject(fault);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_leaks_through_any_path() {
    let sim = simulator(SimConfig {
        token_lifetime: Duration::from_secs(4),
        ..SimConfig::default()
    })
    .await;
    // A second simulator that refuses this host: the whitelist path.
    let walled = simulator(SimConfig {
        ip_whitelist: Some(vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))]),
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let secret_file = dir.path().join("stable.secret");
    std::fs::write(&secret_file, format!("{STABLE_SECRET}\n")).unwrap();
    let wrong_secret = "wrong-s3cr3t-0123456789abcdef";
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\ntoken_wait_timeout = \"1s\"\n\
         [store]\nbackend = \"file\"\npath = \"{}\"\n[log]\nformat = \"json\"\n{}{}{}{}",
        dir.path().join("state").display(),
        classic_app("shop", &sim, "refresh_before = \"2s\"\nmin_forced_interval = \"100ms\"\nfetch_timeout = \"1s\""),
        // The stable account's appid with the classic grant and a bad secret.
        classic_app("wrong", &sim, "")
            .replace(SECRET, wrong_secret)
            .replace(APPID, STABLE_APPID),
        classic_app("walled", &walled, "")
            .replace(SECRET, OTHER_SECRET)
            .replace(APPID, OTHER_APPID),
        stable_app("mini", &sim, "").replace(
            &format!("secret = \"{STABLE_SECRET}\""),
            &format!("secret_file = \"{}\"", secret_file.display()),
        ),
    ) + &wecom_app("crm", &sim, "");
    let config_path = dir.path().join("wxbroker.toml");
    std::fs::write(&config_path, config).unwrap();

    let mut broker = ChildBroker::spawn(&config_path, "debug");
    let api = Api {
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    };
    let mut transcript = Transcript::default();
    broker
        .wait_ready(&format!("{}/v1/apps/shop/token", api.base))
        .await;

    // Healthy reads, then every fault while refreshes run (4 s tokens
    // refreshed 2 s ahead), invalidations, and hostile requests.
    for app in ["shop", "mini", "crm"] {
        api.call(&mut transcript, "GET", &format!("/v1/apps/{app}/token"), "")
            .await;
    }
    inject_every_fault(&sim.sim);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < deadline {
        let (_, answer) = api
            .call(&mut transcript, "GET", "/v1/apps/shop/token", "")
            .await;
        if let Some(token) = token_of(&answer) {
            let body = format!("{{\"access_token\":\"{token}\"}}");
            api.call(
                &mut transcript,
                "POST",
                "/v1/apps/shop/token/invalidate",
                &body,
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (method, path, body) in [
        ("GET", "/v1/apps/wrong/token", ""),
        ("GET", "/v1/apps/walled/token", ""),
        ("GET", "/v1/apps", ""),
        ("GET", "/v1/token", ""),
        ("GET", "/v1/apps/nope/token", ""),
        (
            "POST",
            "/v1/apps/shop/token/invalidate",
            "{\"access_token\":",
        ),
        (
            "POST",
            "/v1/apps/shop/token/invalidate",
            "{\"access_token\":\"87_not-a-real-token\"}",
        ),
        ("GET", "/readyz", ""),
        // The broker puts the app secret into these itself (DESIGN.md
        // section 12): it must go nowhere but upstream.
        (
            "GET",
            "/v1/apps/shop/proxy/sns/jscode2session?js_code=bad&grant_type=authorization_code&secret=placeholder",
            "",
        ),
        (
            "GET",
            "/v1/apps/shop/proxy/sns/oauth2/access_token?code=bad&grant_type=authorization_code",
            "",
        ),
        // Token endpoints are refused, however spelled.
        (
            "GET",
            "/v1/apps/shop/proxy/cgi-bin/%74oken?grant_type=client_credential",
            "",
        ),
    ] {
        api.call(&mut transcript, method, path, body).await;
    }
    let (_, session) = api
        .call(
            &mut transcript,
            "GET",
            "/v1/apps/shop/proxy/sns/jscode2session?js_code=bad&grant_type=authorization_code",
            "",
        )
        .await;
    assert!(
        session.contains("40029"),
        "the real secret went upstream (only the code is refused): {session}"
    );
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    transcript.other_answers.push(metrics);
    assert!(broker.terminate().success());

    let check_config = std::process::Command::new(env!("CARGO_BIN_EXE_wxbroker"))
        .args(["check-config", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(check_config.status.success());
    let check_output = String::from_utf8_lossy(&check_config.stdout).into_owned()
        + &String::from_utf8_lossy(&check_config.stderr);

    let tokens: Vec<String> = transcript
        .token_answers
        .iter()
        .filter_map(|a| token_of(a))
        .collect();
    assert!(tokens.len() > 20, "the run served tokens: {}", tokens.len());
    let log = broker.log();
    assert!(log.contains("token refreshed"), "the log is captured");
    assert!(
        log.contains("40125") && log.contains("40164"),
        "error paths were logged"
    );
    let secrets = [
        SECRET,
        STABLE_SECRET,
        CORPSECRET,
        OTHER_SECRET,
        wrong_secret,
    ];
    let outputs = [("log", &log), ("check-config", &check_output)]
        .into_iter()
        .map(|(name, text)| (name, text.as_str()))
        .chain(
            transcript
                .other_answers
                .iter()
                .map(|a| ("a non-token answer", a.as_str())),
        )
        .chain(
            transcript
                .token_answers
                .iter()
                .map(|a| ("a token answer", a.as_str())),
        );
    for (name, text) in outputs {
        for secret in secrets {
            assert!(!text.contains(secret), "a secret leaked into {name}");
        }
        if name != "a token answer" {
            for token in &tokens {
                assert!(!text.contains(token.as_str()), "a token leaked into {name}");
            }
            // Tokens the broker fetched but never served count too.
            assert!(
                !text.contains("87_") || !looks_like_token_after(text, "87_"),
                "something token-shaped leaked into {name}"
            );
        }
    }
}

/// Whether `prefix` is followed by 40+ token characters somewhere in `text`.
fn looks_like_token_after(text: &str, prefix: &str) -> bool {
    text.match_indices(prefix).any(|(at, _)| {
        text[at + prefix.len()..]
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
            .count()
            >= 40
    })
}

/// The daemon holds app secrets in memory: it must leave no core file and
/// admit no debugger. Run as an unprivileged user (as under systemd), a
/// non-dumpable process's `/proc/PID/mem` and `environ` belong to root
/// instead of to that user; its core size limit reads 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_is_not_dumpable() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;

    const NOBODY: u32 = 65534;
    if !running_as_root() {
        println!("skipped: running as another user needs root");
        return;
    }
    let sim = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // The unprivileged daemon must be able to read its configuration.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let config_path = dir.path().join("wxbroker.toml");
    std::fs::write(
        &config_path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n{}",
            classic_app("shop", &sim, "")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let stderr_path = dir.path().join("wxbroker.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_wxbroker"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .uid(NOBODY)
        .gid(NOBODY)
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("wxbroker starts");
    let mut broker = ChildBroker { child, stderr_path };
    broker
        .wait_ready(&format!("http://127.0.0.1:{port}/v1/apps/shop/token"))
        .await;

    let proc_dir = format!("/proc/{}", broker.child.id());
    let status = std::fs::read_to_string(format!("{proc_dir}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().nth(2) == Some("65534"),
        "the daemon runs as nobody: {uid_line}"
    );
    for entry in ["/mem", "/environ"] {
        let owner = std::fs::metadata(format!("{proc_dir}{entry}"))
            .unwrap()
            .uid();
        assert_eq!(owner, 0, "{proc_dir}{entry} belongs to root: not dumpable");
    }
    let limits = std::fs::read_to_string(format!("{proc_dir}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().skip(4).take(2).collect::<Vec<_>>(),
        ["0", "0"],
        "{core}"
    );
    // The process metrics still read the daemon's own /proc entries.
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("process_open_fds"), "{metrics}");
    assert!(broker.terminate().success(), "{}", broker.log());
}

/// Whether this test process runs as root (only root may start a child
/// as another user).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}
