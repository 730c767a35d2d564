//! `[[clients]]` as the whole configuration reads them: identities,
//! what each may read and call, and the remote listener they connect to.

use super::*;

use crate::config::{Config, ConfigError};

const DIGEST: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

/// A file holding `text`, kept for the test's length.
fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str_with_env("t.toml", text, &|_| None)
}

fn key_of(text: &str) -> String {
    parse(text).unwrap_err().key().unwrap().to_owned()
}

#[test]
fn followers_clients_and_the_remote_listener_validate() {
    let dir = tempfile::tempdir().unwrap();
    let credential = file(&dir, "credential", "bearer-credential-value\n");
    let issued = crate::tls::init(&dir.path().join("tls")).unwrap();
    let tls = format!(
        "remote_tls = {{ cert_file = \"{}\", key_file = \"{}\" }}",
        issued.cert.display(),
        issued.key.display()
    );
    let server = |extra: &str| format!("[server]\nlisten = \"127.0.0.1:8930\"\n{extra}\n");
    let follower = |extra: &str| {
        format!(
            "[[apps]]\nname = \"shop\"\nappid = \"wx1\"\nfollow = \"https://prod:8943\"\n\
             follow_credential_file = \"{credential}\"\n{extra}\n"
        )
    };
    let owned = "[[apps]]\nname = \"crm\"\nappid = \"wx2\"\nsecret = \"s\"\n";
    let bearer = format!(
        "[[clients]]\nname = \"staging\"\ncredential_sha256 = \"{DIGEST}\"\napps = [\"crm\"]\n"
    );

    let config = parse(&format!(
        "{}{}{owned}{bearer}[[clients]]\nname = \"deploy\"\nuid = 1001\napps = [\"shop\"]\n",
        server(&format!("remote_listen = \"0.0.0.0:8943\"\n{tls}")),
        follower(&format!("follow_ca_file = \"{}\"", issued.ca.display())),
    ))
    .unwrap();
    let follow = config.apps[0].follow.as_ref().unwrap();
    assert_eq!(follow.url, "https://prod:8943");
    assert_eq!(follow.credential.expose(), "bearer-credential-value");
    assert_eq!(config.clients.len(), 2);
    let shown = config.render_effective();
    assert!(!shown.contains("bearer-credential-value") && !shown.contains(DIGEST));
    assert!(shown.contains("follow = \"https://prod:8943\""), "{shown}");
    assert!(!format!("{config:?}").contains(DIGEST));
    // The remote listener's own limits, by default and as set.
    let limits = |config: &Config| {
        (
            config.server.remote_max_connections,
            config.server.remote_max_watches_per_client,
        )
    };
    assert_eq!(limits(&config), (256, 64));
    assert!(
        shown.contains("remote_max_watches_per_client = 64"),
        "{shown}"
    );
    let remote = |extra: &str| {
        format!(
            "{}{owned}{bearer}",
            server(&format!(
                "remote_listen = \"127.0.0.1:8943\"\n{tls}\n{extra}"
            ))
        )
    };
    let set = parse(&remote(
        "remote_max_connections = 32\nremote_max_watches_per_client = 4",
    ))
    .unwrap();
    assert_eq!(limits(&set), (32, 4));
    assert_eq!(
        key_of(&remote("remote_max_connections = 0")),
        "server.remote_max_connections"
    );
    assert_eq!(
        key_of(&remote("remote_max_watches_per_client = -1")),
        "server.remote_max_watches_per_client"
    );

    // Each mistake is named by its key.
    let cases = [
        (
            format!("{}{}", server(""), follower("secret = \"s\"")),
            "apps.shop.secret",
        ),
        (
            format!(
                "{}{}",
                server(""),
                follower("").replace("https://prod", "http://prod")
            ),
            "apps.shop.follow",
        ),
        (
            format!(
                "{}[[apps]]\nname = \"shop\"\nappid = \"wx1\"\nfollow = \"https://prod\"\n",
                server("")
            ),
            "apps.shop.follow_credential_file",
        ),
        (
            format!("{}{owned}follow_ca_file = \"/x\"\n", server("")),
            "apps.crm.follow_ca_file",
        ),
        (
            format!("{}{owned}", server("remote_listen = \"127.0.0.1:8943\"")),
            "server.remote_tls",
        ),
        (
            format!(
                "{}{owned}",
                server(&format!("remote_listen = \"127.0.0.1:8943\"\n{tls}"))
            ),
            "server.remote_listen",
        ),
        (
            format!("{}{owned}{bearer}", server("")),
            "clients[0].credential_sha256",
        ),
        (
            format!(
                "{}{owned}[[clients]]\nname = \"x\"\nuid = 5\napps = [\"nope\"]\n",
                server("")
            ),
            "clients[0].apps",
        ),
        (
            format!(
                "{}{owned}[[clients]]\nname = \"x\"\nuid = 5\ngid = 5\napps = [\"crm\"]\n",
                server("")
            ),
            "clients[0]",
        ),
    ];
    for (text, key) in cases {
        assert_eq!(key_of(&text), key, "{text}");
    }
    // A pasted credential is not echoed back.
    let pasted = format!(
        "{}{owned}[[clients]]\nname = \"x\"\ncredential_sha256 = \"bearer-credential-value\"\napps = [\"crm\"]\n",
        server(&format!("remote_listen = \"127.0.0.1:8943\"\n{tls}"))
    );
    let message = parse(&pasted).unwrap_err().to_string();
    assert!(!message.contains("bearer-credential-value"), "{message}");
}

#[test]
fn clients_name_platforms_suites_apis_and_admin() {
    let platform = "[[platforms]]\nname = \"saas\"\ncomponent_appid = \"wxc\"\nsecret = \"s\"\n\
                    token = \"t\"\naes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\n";
    let base = format!(
        "[server]\nlisten = \"127.0.0.1:8930\"\ncallback_listen = \"127.0.0.1:8940\"\n\
         [[apps]]\nname = \"shop\"\nappid = \"wx1\"\nsecret = \"s\"\n{platform}"
    );
    let config = parse(&format!(
        "{base}[[clients]]\nuid = 1001\napps = [\"shop\"]\nplatforms = [\"saas\"]\n\
         apis = [\"/cgi-bin/message/*\", \"/tcb/invokecloudfunction\"]\n\
         [[clients]]\ngid = 50\nplatforms = [\"saas\"]\nadmin = true\n\
         [[clients]]\nname = \"ci\"\nuid = 1002\napps = [\"shop\"]\napis = []\n"
    ))
    .unwrap();
    let names: Vec<&str> = config.clients.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["uid:1001", "gid:50", "ci"]);
    let first = &config.clients[0];
    assert_eq!(first.platforms, ["saas"]);
    assert_eq!(first.apis.as_ref().map(Vec::len), Some(2));
    assert!(config.clients[1].admin && config.clients[1].apps.is_empty());
    assert_eq!(config.clients[2].apis, Some(Vec::new()));
    // check-config shows each client's lists, and a name taken from
    // the identity as a comment (it is no name one could write).
    let shown = config.render_effective();
    for line in [
        "# name: uid:1001 (from its identity)",
        "platforms = [\"saas\"]",
        "apis = [\"/cgi-bin/message/*\", \"/tcb/invokecloudfunction\"]",
        "admin = true",
        "apis = []",
        "# apis: not set (every path)",
    ] {
        assert!(shown.contains(line), "{line} in\n{shown}");
    }

    let client = |body: &str| format!("{base}[[clients]]\n{body}\n");
    let cases = [
        (
            "uid = 5\napps = [\"shop\"]\nplatforms = [\"nope\"]",
            "clients[0].platforms",
        ),
        (
            "uid = 5\nplatforms = [\"saas\", \"saas\"]",
            "clients[0].platforms",
        ),
        (
            "uid = 5\napps = [\"shop\"]\nsuites = [\"crm\"]",
            "clients[0].suites",
        ),
        ("uid = 5", "clients[0].apps"),
        ("uid = 5\napps = []\nplatforms = []", "clients[0].apps"),
        (
            "uid = 5\napps = [\"shop\"]\napis = [\"/cgi-bin/*\", \"cgi-bin/x\"]",
            "clients[0].apis[1]",
        ),
        (
            "uid = 5\napps = [\"shop\"]\napis = [\"/a/*/b\"]",
            "clients[0].apis[0]",
        ),
        (
            "uid = 5\napps = [\"shop\"]\napis = [\"/a/../b\"]",
            "clients[0].apis[0]",
        ),
        (
            "uid = 5\napps = [\"shop\"]\napis = [\"/a/%62\"]",
            "clients[0].apis[0]",
        ),
        (
            "uid = 5\napps = [\"shop\"]\napis = [\"\"]",
            "clients[0].apis[0]",
        ),
        (
            "name = \"bad name\"\nuid = 5\napps = [\"shop\"]",
            "clients[0].name",
        ),
    ];
    for (body, key) in cases {
        assert_eq!(key_of(&client(body)), key, "{body}");
    }
    let message = parse(&client("uid = 5\napps = [\"shop\"]\nsuites = [\"crm\"]"))
        .unwrap_err()
        .to_string();
    assert!(message.contains("none is configured"), "{message}");
    let message = parse(&client("uid = 5\napps = [\"shop\"]\napis = [\"/a/*/b\"]"))
        .unwrap_err()
        .to_string();
    assert!(message.contains("'*'"), "{message}");
    // Two nameless entries of one uid are twins.
    let twins = client("uid = 5\napps = [\"shop\"]\n[[clients]]\nuid = 5\napps = [\"shop\"]");
    assert_eq!(key_of(&twins), "clients[1].uid");
}

#[test]
fn a_bearer_client_needs_a_name_and_is_never_admin() {
    let dir = tempfile::tempdir().unwrap();
    let issued = crate::tls::init(&dir.path().join("tls")).unwrap();
    let base = format!(
        "[server]\nlisten = \"127.0.0.1:8930\"\nremote_listen = \"127.0.0.1:8943\"\n\
         remote_tls = {{ cert_file = \"{}\", key_file = \"{}\" }}\n\
         [[apps]]\nname = \"shop\"\nappid = \"wx1\"\nsecret = \"s\"\n",
        issued.cert.display(),
        issued.key.display()
    );
    let nameless =
        format!("{base}[[clients]]\ncredential_sha256 = \"{DIGEST}\"\napps = [\"shop\"]\n");
    assert_eq!(key_of(&nameless), "clients[0].name");
    let message = parse(&nameless).unwrap_err().to_string();
    assert!(!message.contains(&DIGEST[..8]), "{message}");
    let admin = format!(
        "{base}[[clients]]\nname = \"staging\"\ncredential_sha256 = \"{DIGEST}\"\n\
         apps = [\"shop\"]\nadmin = true\n"
    );
    assert_eq!(key_of(&admin), "clients[0].admin");
}

#[test]
fn local_listeners_beyond_loopback_are_warned_about_with_uid_clients() {
    let config = |host: &str, clients: &str| {
        parse(&format!(
            "[server]\nlisten = \"{host}:8930\"\nrequire_client_header = true\n\
             [[apps]]\nname = \"shop\"\nappid = \"wx1\"\nsecret = \"s\"\n\
             compat_listen = \"{host}:8932\"\n{clients}"
        ))
        .unwrap()
    };
    let uid = "[[clients]]\nuid = 1001\napps = [\"shop\"]\n";
    let warned = |config: &Config| {
        config
            .warnings()
            .into_iter()
            .find(|warning| warning.contains("uid/gid clients"))
    };
    let warning = warned(&config("0.0.0.0", uid)).expect("a warning");
    assert!(
        warning.contains("server.listen and apps.shop.compat_listen"),
        "{warning}"
    );
    assert!(warning.contains("server.remote_listen"), "{warning}");
    // On loopback, or without uid or gid clients, every caller is known.
    assert_eq!(warned(&config("127.0.0.1", uid)), None);
    assert_eq!(warned(&config("0.0.0.0", "")), None);
}

#[test]
fn digests_are_64_hex_digits() {
    let hex = "ab".repeat(32);
    assert_eq!(sha256_hex(&hex), Some([0xab; 32]));
    assert_eq!(sha256_hex(&"ab".repeat(31)), None);
    assert_eq!(sha256_hex(&"zz".repeat(32)), None);
    assert_eq!(sha256_hex(&"+a".repeat(32)), None);
}
