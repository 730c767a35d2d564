//! The deployment files under `deploy/` and the `Dockerfile`, checked as
//! far as this machine allows: the systemd unit with `systemd-analyze
//! verify`, the sd_notify handshake with the real binary, and the
//! Kubernetes manifests parsed and cross-checked against the embedded
//! configuration (ports, probes, volumes, secrets, the PodMonitor).

mod support;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::process::{self, BIN};
use support::*;
use wxbroker::config::{Config, StoreBackend};
use wxbroker::simulator::SimConfig;
use yaml_rust2::{Yaml, YamlLoader};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ----- systemd -----

const UNIT: &str = "deploy/systemd/wxbroker.service";

/// `Key=value` lines of a unit file, in order (a key may repeat).
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with(['#', ';', '[']))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

fn unit_value<'a>(settings: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Runs `systemd-analyze verify` on `unit`. Returns `None` when the tool
/// is missing; otherwise its success and everything it printed (it exits 0
/// on unknown keys and bad values, printing them, so both matter).
fn systemd_verify(unit: &Path) -> Option<(bool, String)> {
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .ok()?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some((output.status.success(), printed.trim().to_owned()))
}

#[test]
fn the_systemd_unit_verifies() {
    let dir = tempfile::tempdir().unwrap();
    // A control unit that any working systemd-analyze accepts silently:
    // if it does not, this machine cannot verify units at all.
    let control = dir.path().join("wxbroker-control.service");
    fs::write(&control, "[Service]\nType=oneshot\nExecStart=/bin/true\n").unwrap();
    match systemd_verify(&control) {
        None => {
            println!("skipped: systemd-analyze is not installed");
            return;
        }
        Some((true, printed)) if printed.is_empty() => {}
        Some((_, printed)) => {
            println!("skipped: systemd-analyze cannot verify units here: {printed}");
            return;
        }
    }
    // Verify checks that ExecStart's binary exists: point it at the one
    // cargo built, leaving every other line as shipped.
    let unit = read(UNIT).replace("/usr/local/bin/wxbroker", BIN);
    let path = dir.path().join("wxbroker.service");
    fs::write(&path, &unit).unwrap();
    let (ok, printed) = systemd_verify(&path).unwrap();
    assert!(
        ok && printed.is_empty(),
        "systemd-analyze verify:\n{printed}"
    );

    // And the check is not vacuous: a typo in the unit is reported.
    fs::write(&path, unit.replace("Type=notify", "Type=notfiy")).unwrap();
    let (_, printed) = systemd_verify(&path).unwrap();
    assert!(printed.contains("notfiy"), "a bad Type= went unnoticed");
}

#[test]
fn the_systemd_unit_matches_the_daemon_and_its_example_config() {
    let settings = unit_settings(&read(UNIT));
    let one = |key: &str| -> &str {
        match unit_value(&settings, key)[..] {
            [value] => value,
            ref values => panic!("{key}: expected one value, found {values:?}"),
        }
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(
        one("ExecStart"),
        "/usr/local/bin/wxbroker serve --config /etc/wxbroker/wxbroker.toml"
    );
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("RestartPreventExitStatus"), "2", "config errors");
    assert_eq!(one("RuntimeDirectory"), "wxbroker");
    assert_eq!(one("StateDirectory"), "wxbroker");
    assert_eq!(one("User"), "wxbroker");
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("CapabilityBoundingSet", ""),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        // A core file would hold the app secrets.
        ("LimitCORE", "0"),
    ] {
        assert_eq!(one(key), value, "{key}");
    }
    assert!(unit_value(&settings, "SystemCallFilter").contains(&"@system-service"));

    // ProtectSystem=strict leaves only the unit's own directories writable:
    // the example config must keep its socket, state and sinks there.
    let text = read("deploy/systemd/wxbroker.toml");
    let env = |name: &str| (name == "SHOP_SECRET").then(|| "example-secret".to_owned());
    let config = Config::from_toml_str_with_env("wxbroker.toml", &text, &env)
        .unwrap_or_else(|e| panic!("{e}"));
    let socket = config.server.unix_socket.as_deref().expect("a socket");
    assert!(socket.starts_with("/run/wxbroker"), "{}", socket.display());
    assert_eq!(
        config.store.backend,
        StoreBackend::File {
            path: "/var/lib/wxbroker".into()
        }
    );
    for app in &config.apps {
        if let Some(sink) = &app.sink {
            assert!(sink.path.starts_with("/run/wxbroker"), "{:?}", sink.path);
        }
    }
    assert_eq!(config.warnings(), Vec::<String>::new());
}

fn receive(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 4096];
    let len = socket
        .recv(&mut buffer)
        .expect("a notification within the timeout");
    String::from_utf8(buffer[..len].to_vec()).unwrap()
}

/// `serve` under a fake systemd: the test binds the notification socket,
/// and the real binary, run with `NOTIFY_SOCKET`, says READY=1 once each
/// app has a token or a failed first attempt, and STOPPING=1 on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_notifies_systemd_when_ready_and_when_stopping() {
    let sim = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(WAIT)).unwrap();
    let socket = dir.path().join("wxbroker.sock");
    let config = dir.path().join("wxbroker.toml");
    fs::write(
        &config,
        format!(
            "[server]\nunix_socket = \"{}\"\nsocket_mode = \"0600\"\n\n{}\n\
             [[apps]]\nname = \"bad\"\ngrant = \"stable\"\nappid = \"{STABLE_APPID}\"\n\
             secret = \"not-the-secret\"\napi_base = \"{}\"\n",
            socket.display(),
            classic_app("shop", &sim, ""),
            sim.base_url()
        ),
    )
    .unwrap();

    let mut broker = process::spawn(
        &["serve", "--config", config.to_str().unwrap()],
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
        &dir.path().join("serve.log"),
    );
    let ready = tokio::task::spawn_blocking({
        let notify = notify.try_clone().unwrap();
        move || receive(&notify)
    })
    .await
    .unwrap();
    let lines: Vec<&str> = ready.lines().collect();
    assert_eq!(lines[0], "READY=1", "{ready}");
    let status = lines
        .iter()
        .find_map(|line| line.strip_prefix("STATUS="))
        .expect("a STATUS line");
    assert!(
        status.contains("no valid token for bad (errcode 40125"),
        "{status}"
    );
    assert!(!status.contains("shop"), "{status}");
    // By READY=1 the good app holds its token.
    assert_eq!(sim.sim.total_token_calls(), 2);

    // The probe subcommand, over the socket: alive, but not ready (bad).
    let socket_arg = socket.to_str().unwrap();
    let (status, output) =
        process::run(&["probe", "livez", "--socket", socket_arg], &[], dir.path()).await;
    assert!(status.success(), "{output}");
    let (status, output) = process::run(
        &["probe", "readyz", "--socket", socket_arg],
        &[],
        dir.path(),
    )
    .await;
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("503"), "{output}");
    assert!(output.contains("bad"), "{output}");

    broker.terminate().await;
    let stopping = tokio::task::spawn_blocking(move || receive(&notify))
        .await
        .unwrap();
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    let status = broker.wait().await;
    assert!(status.success(), "{status}: {}", broker.output());
    assert!(!socket.exists(), "the socket file is removed on shutdown");
    sim.shutdown().await;
}

// ----- Kubernetes -----

const KUBE: &str = "deploy/kubernetes";

fn str_of<'a>(yaml: &'a Yaml, what: &str) -> &'a str {
    yaml.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {yaml:?}"))
}

fn list(yaml: &Yaml) -> &[Yaml] {
    yaml.as_vec().map(Vec::as_slice).unwrap_or(&[])
}

fn labels(yaml: &Yaml) -> HashMap<String, String> {
    yaml.as_hash()
        .map(|hash| {
            hash.iter()
                .map(|(k, v)| {
                    (
                        str_of(k, "label").to_owned(),
                        str_of(v, "label value").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn is_subset(needles: &HashMap<String, String>, haystack: &HashMap<String, String>) -> bool {
    !needles.is_empty() && needles.iter().all(|(k, v)| haystack.get(k) == Some(v))
}

/// Every document of every `.yaml` file, with the file it came from.
fn manifests() -> Vec<(String, Yaml)> {
    let mut docs = Vec::new();
    let mut files: Vec<_> = fs::read_dir(repo(KUBE))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(&file).unwrap();
        let parsed = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        for doc in parsed {
            docs.push((name.clone(), doc));
        }
    }
    docs
}

fn find<'a>(docs: &'a [(String, Yaml)], kind: &str, name: Option<&str>) -> &'a Yaml {
    let found: Vec<&Yaml> = docs
        .iter()
        .map(|(_, doc)| doc)
        .filter(|doc| doc["kind"].as_str() == Some(kind))
        .filter(|doc| name.is_none() || doc["metadata"]["name"].as_str() == name)
        .collect();
    match found[..] {
        [one] => one,
        _ => panic!("expected one {kind} {name:?}, found {}", found.len()),
    }
}

/// The container port (number) a probe or endpoint names by name or number.
fn port_number(container: &Yaml, port: &Yaml) -> i64 {
    if let Some(number) = port.as_i64() {
        return number;
    }
    let name = str_of(port, "port");
    list(&container["ports"])
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_i64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// The volume mounted at the longest mount path containing `path`, and
/// that mount path.
fn mount_of<'a>(container: &'a Yaml, path: &Path) -> Option<(&'a str, &'a str)> {
    list(&container["volumeMounts"])
        .iter()
        .map(|m| {
            (
                str_of(&m["name"], "mount name"),
                str_of(&m["mountPath"], "mountPath"),
            )
        })
        .filter(|(_, at)| path.starts_with(at))
        .max_by_key(|(_, at)| at.len())
}

fn env_value<'a>(container: &'a Yaml, name: &str) -> Option<&'a Yaml> {
    list(&container["env"])
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
}

#[test]
fn the_kubernetes_manifests_are_wired_together() {
    let docs = manifests();

    // kustomization.yaml lists exactly the other files.
    let kustomization = find(&docs, "Kustomization", None);
    let listed: BTreeSet<&str> = list(&kustomization["resources"])
        .iter()
        .map(|r| str_of(r, "resource"))
        .collect();
    let files: BTreeSet<&str> = docs
        .iter()
        .map(|(file, _)| file.as_str())
        .filter(|f| *f != "kustomization.yaml")
        .collect();
    assert_eq!(listed, files);

    let deployment = find(&docs, "Deployment", None);
    assert_eq!(deployment["apiVersion"].as_str(), Some("apps/v1"));
    let template = &deployment["spec"]["template"];
    let pod_labels = labels(&template["metadata"]["labels"]);
    assert!(is_subset(
        &labels(&deployment["spec"]["selector"]["matchLabels"]),
        &pod_labels
    ));
    let pod = &template["spec"];

    // The broker: a native sidecar (restartable init container) or a container.
    let all: Vec<&Yaml> = list(&pod["initContainers"])
        .iter()
        .chain(list(&pod["containers"]))
        .collect();
    let broker = *all
        .iter()
        .find(|c| c["name"].as_str() == Some("wxbroker"))
        .expect("a wxbroker container");
    if list(&pod["initContainers"]).iter().any(|c| c == broker) {
        assert_eq!(broker["restartPolicy"].as_str(), Some("Always"));
    }
    let apps: Vec<&Yaml> = list(&pod["containers"])
        .iter()
        .filter(|c| c["name"].as_str() != Some("wxbroker"))
        .collect();
    assert_eq!(apps.len(), 1, "one application container");
    let app = apps[0];

    // Volumes: every mount names a volume, every volume is mounted.
    let volumes: HashMap<&str, &Yaml> = list(&pod["volumes"])
        .iter()
        .map(|v| (str_of(&v["name"], "volume name"), v))
        .collect();
    let mut mounted = BTreeSet::new();
    for container in &all {
        for mount in list(&container["volumeMounts"]) {
            let name = str_of(&mount["name"], "mount name");
            assert!(volumes.contains_key(name), "mount of unknown volume {name}");
            mounted.insert(name);
        }
    }
    assert_eq!(mounted, volumes.keys().copied().collect());

    // The config: the ConfigMap key the --config argument points at.
    let args: Vec<&str> = list(&broker["args"])
        .iter()
        .map(|a| str_of(a, "arg"))
        .collect();
    let config_arg = args
        .iter()
        .position(|a| *a == "--config")
        .map(|i| Path::new(args[i + 1]))
        .expect("--config in the sidecar's args");
    let (config_volume, config_dir) = mount_of(broker, config_arg).expect("config is mounted");
    let config_map_name = str_of(
        &volumes[config_volume]["configMap"]["name"],
        "configMap volume",
    );
    let file = config_arg
        .strip_prefix(config_dir)
        .unwrap()
        .to_str()
        .unwrap();
    let key = list(&volumes[config_volume]["configMap"]["items"])
        .iter()
        .find(|item| item["path"].as_str() == Some(file))
        .map_or(file, |item| str_of(&item["key"], "item key"));
    let config_map = find(&docs, "ConfigMap", Some(config_map_name));
    let toml = str_of(&config_map["data"][key], "the embedded wxbroker.toml");

    // Secrets: each secretKeyRef names an existing Secret key; the values
    // are what the config's secret_env lookups see.
    let mut env = HashMap::new();
    for var in list(&broker["env"]) {
        let reference = &var["valueFrom"]["secretKeyRef"];
        if reference.is_badvalue() {
            continue;
        }
        let secret = find(
            &docs,
            "Secret",
            Some(str_of(&reference["name"], "secret name")),
        );
        let value = str_of(
            &secret["stringData"][str_of(&reference["key"], "secret key")],
            "the secret value",
        );
        env.insert(
            str_of(&var["name"], "env name").to_owned(),
            value.to_owned(),
        );
    }
    let config = Config::from_toml_str_with_env("configmap", toml, &|name| env.get(name).cloned())
        .unwrap_or_else(|e| panic!("the ConfigMap's wxbroker.toml: {e}"));

    // Ports: the metrics listener is declared; every declared port is one
    // the config listens on; probes and the PodMonitor use it.
    let metrics = config.server.metrics_listen.expect("metrics_listen");
    assert!(
        metrics.ip().is_unspecified(),
        "probes come from the kubelet on the pod IP: bind 0.0.0.0, not {metrics}"
    );
    let configured: BTreeSet<i64> = [
        config.server.listen,
        config.server.metrics_listen,
        config.server.wechat_compat_listen,
    ]
    .into_iter()
    .flatten()
    .map(|a| i64::from(a.port()))
    .collect();
    let declared: Vec<&Yaml> = list(&broker["ports"]).iter().collect();
    assert!(!declared.is_empty());
    for port in &declared {
        let number = port["containerPort"].as_i64().unwrap();
        assert!(
            configured.contains(&number),
            "port {number} is not in the config"
        );
    }
    for (probe, path) in [
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/livez"),
    ] {
        let get = &broker[probe]["httpGet"];
        if probe == "startupProbe" && get.is_badvalue() {
            continue;
        }
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(
            port_number(broker, &get["port"]),
            i64::from(metrics.port()),
            "{probe}"
        );
    }

    // The socket (and any sink) sits on an emptyDir both containers mount
    // at the same place, and the app is told where.
    let socket = config.server.unix_socket.as_deref().expect("unix_socket");
    let (socket_volume, socket_dir) = mount_of(broker, socket).expect("the socket dir is mounted");
    assert!(!volumes[socket_volume]["emptyDir"].is_badvalue());
    assert_eq!(mount_of(app, socket), Some((socket_volume, socket_dir)));
    assert_eq!(
        env_value(app, "WXBROKER_SOCKET").map(|v| str_of(&v["value"], "WXBROKER_SOCKET")),
        Some(socket.to_str().unwrap())
    );
    for sink in config.apps.iter().filter_map(|a| a.sink.as_ref()) {
        assert_eq!(
            mount_of(broker, &sink.path),
            Some((socket_volume, socket_dir))
        );
        assert_eq!(mount_of(app, &sink.path), Some((socket_volume, socket_dir)));
    }
    // Different users share them through the pod's fsGroup.
    if !pod["securityContext"]["fsGroup"].is_badvalue() {
        assert_eq!(
            config.server.socket_mode & 0o060,
            0o060,
            "group rw on the socket"
        );
        for sink in config.apps.iter().filter_map(|a| a.sink.as_ref()) {
            assert_eq!(sink.mode & 0o040, 0o040, "group r on {:?}", sink.path);
        }
    }
    // A read-only root file system: state must be on a volume.
    if let StoreBackend::File { path } = &config.store.backend {
        let (volume, _) = mount_of(broker, path).expect("the state dir is mounted");
        assert_ne!(
            volume, config_volume,
            "state on the read-only config volume"
        );
    }
    assert_eq!(
        broker["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );

    // The PodMonitor selects this pod and scrapes the metrics port.
    let monitor = find(&docs, "PodMonitor", None);
    assert_eq!(
        monitor["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    assert!(is_subset(
        &labels(&monitor["spec"]["selector"]["matchLabels"]),
        &pod_labels
    ));
    let endpoints = list(&monitor["spec"]["podMetricsEndpoints"]);
    assert_eq!(endpoints.len(), 1);
    assert_eq!(
        port_number(broker, &endpoints[0]["port"]),
        i64::from(metrics.port())
    );
    assert_eq!(endpoints[0]["path"].as_str(), Some("/metrics"));
}

// ----- Docker -----

#[test]
fn the_dockerfile_builds_locked_and_runs_unprivileged() {
    let text = read("Dockerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(has("FROM rust:1-bookworm AS build"));
    assert!(has("cargo build --locked --release"));
    assert!(has("FROM debian:bookworm-slim"));
    assert!(has("USER wxbroker:wxbroker"));
    assert!(has("ENV WXBROKER_CONFIG=/etc/wxbroker/wxbroker.toml"));
    assert!(has(r#"ENTRYPOINT ["/usr/local/bin/wxbroker", "serve"]"#));
    assert!(has(r#"CMD ["/usr/local/bin/wxbroker", "probe", "readyz""#));
    for dir in ["/run/wxbroker", "/var/lib/wxbroker"] {
        assert!(has(&format!("-o wxbroker -g wxbroker {dir}")), "{dir}");
    }
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l == "target/"));

    // The healthcheck's command line is one the binary accepts.
    let output = Command::new(BIN)
        .args([
            "probe",
            "readyz",
            "--url",
            "http://127.0.0.1:9",
            "--timeout",
            "4s",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

// ----- docker compose (a fleet on Redis) -----

/// A compose service with its `<<: *anchor` merge applied (yaml-rust2
/// resolves the alias but leaves merging to the reader).
fn service<'a>(compose: &'a Yaml, name: &str) -> HashMap<&'a str, &'a Yaml> {
    let service = &compose["services"][name];
    let own = service
        .as_hash()
        .unwrap_or_else(|| panic!("service {name} is missing"));
    let mut merged = HashMap::new();
    if let Some(base) = own.get(&Yaml::String("<<".into())).and_then(Yaml::as_hash) {
        for (key, value) in base {
            merged.insert(str_of(key, "key"), value);
        }
    }
    for (key, value) in own {
        merged.insert(str_of(key, "key"), value);
    }
    merged
}

fn volume_sources(service: &HashMap<&str, &Yaml>) -> BTreeSet<String> {
    service
        .get("volumes")
        .map(|volumes| list(volumes))
        .unwrap_or_default()
        .iter()
        .map(|mount| {
            str_of(mount, "volume")
                .split(':')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn the_compose_fleet_shares_one_redis_and_gives_each_app_its_own_broker() {
    let compose = &YamlLoader::load_from_str(&read("deploy/docker-compose.yml")).unwrap()[0];
    let config = Config::from_toml_str_with_env(
        "deploy/compose/wxbroker.toml",
        &read("deploy/compose/wxbroker.toml"),
        &|name| (name == "SHOP_SECRET").then(|| "compose-test-secret".to_owned()),
    )
    .expect("the fleet's config is valid");
    let StoreBackend::Redis(redis) = &config.store.backend else {
        panic!("the fleet shares a redis store");
    };
    let redis_host = redis
        .url
        .trim_start_matches("redis://")
        .split([':', '/'])
        .next()
        .unwrap();
    assert!(
        compose["services"][redis_host].as_hash().is_some(),
        "the store url names the compose service {redis_host}"
    );
    let socket = config
        .server
        .unix_socket
        .clone()
        .expect("apps use the socket");
    let socket_dir = socket.parent().unwrap().to_str().unwrap();
    let config_target = compose["configs"]["wxbroker"]["file"].as_str().unwrap();
    assert_eq!(
        repo("deploy").join(config_target).canonicalize().unwrap(),
        repo("deploy/compose/wxbroker.toml").canonicalize().unwrap()
    );
    let mut sockets = BTreeSet::new();
    for (broker, app) in [("broker-a", "app-a"), ("broker-b", "app-b")] {
        let broker = service(compose, broker);
        let app = service(compose, app);
        let command: Vec<&str> = list(broker["command"])
            .iter()
            .map(|c| str_of(c, "arg"))
            .collect();
        assert_eq!(command[0], "serve");
        let config_mount = list(broker["configs"])
            .iter()
            .find_map(|c| c["target"].as_str())
            .unwrap();
        assert_eq!(
            command.last(),
            Some(&config_mount),
            "serve reads the mounted config"
        );
        let env = broker["environment"].as_hash().unwrap();
        assert!(env.contains_key(&Yaml::String("SHOP_SECRET".into())));
        // Each app shares a socket volume with its own broker only.
        let shared: Vec<_> = volume_sources(&broker)
            .intersection(&volume_sources(&app))
            .cloned()
            .collect();
        assert_eq!(shared.len(), 1, "one socket volume per host");
        let mounts = list(broker["volumes"]);
        assert!(mounts
            .iter()
            .any(|m| str_of(m, "volume") == format!("{}:{socket_dir}", shared[0])));
        let app_command = list(app["command"])
            .iter()
            .map(|c| str_of(c, "arg"))
            .collect::<String>();
        assert!(
            app_command.contains(socket.to_str().unwrap()),
            "the app uses the socket path"
        );
        sockets.insert(shared[0].clone());
    }
    assert_eq!(sockets.len(), 2, "the hosts do not share a socket");
}
