//! The `sink` key of `[[apps]]`, as an operator meets it: values and
//! defaults, errors naming `apps.{name}.sink.*`, `check-config` output that
//! parses back, and a warning for token files every user can read.

use std::path::Path;

use wxbroker::config::{ConfigError, SinkConfig, SinkFormat};

use super::{err, ok, parse, APP, SOURCE};

const CRM: &str = "name = \"crm\"\nkind = \"wecom\"\nappid = \"ww1\"\nsecret_env = \"SHOP_SECRET\"";

/// A document with one `shop` app carrying `sink`, and any further tables.
fn doc(sink: &str, rest: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:8930\"\n\n[[apps]]\n{APP}\n{sink}\n\n{rest}\n")
}

#[test]
fn no_sink_unless_configured() {
    assert_eq!(ok(&doc("", "")).apps[0].sink, None);
}

#[test]
fn a_sink_defaults_to_json_and_owner_only() {
    let config = ok(&doc("sink = { path = \"/run/wxbroker/shop.json\" }", ""));
    assert_eq!(
        config.apps[0].sink,
        Some(SinkConfig {
            path: "/run/wxbroker/shop.json".into(),
            format: SinkFormat::Json,
            mode: 0o600,
        })
    );
}

#[test]
fn every_sink_key_is_read() {
    let config = ok(&doc(
        "sink = { path = \"/run/wxbroker/shop.token\", format = \"raw\", mode = \"0640\" }",
        "",
    ));
    let sink = config.apps[0].sink.as_ref().unwrap();
    assert_eq!(sink.path, Path::new("/run/wxbroker/shop.token"));
    assert_eq!(sink.format, SinkFormat::Raw);
    assert_eq!(sink.mode, 0o640);
    // The table form is the same key.
    let config = ok(&format!(
        "[server]\nlisten = \"127.0.0.1:8930\"\n\n[[apps]]\n{APP}\n[apps.sink]\npath = \"/srv/t\"\nformat = \"json\"\n"
    ));
    assert_eq!(
        config.apps[0].sink.as_ref().unwrap().path,
        Path::new("/srv/t")
    );
}

#[test]
fn each_invalid_sink_is_named_by_its_key() {
    let cases = [
        ("sink = { format = \"raw\" }", "", "apps.shop.sink.path", "required"),
        ("sink = { path = \"\" }", "", "apps.shop.sink.path", "must not be empty"),
        ("sink = { path = \"shop.json\" }", "", "apps.shop.sink.path", "absolute"),
        ("sink = { path = \"/run/wxbroker/\" }", "", "apps.shop.sink.path", "must name a file"),
        ("sink = { path = \"/t\", format = \"yaml\" }", "", "apps.shop.sink.format", "\"yaml\" is not one of \"json\", \"raw\""),
        ("sink = { path = \"/t\", mode = \"0680\" }", "", "apps.shop.sink.mode", "octal"),
        ("sink = { path = \"/t\", mode = 640 }", "", "apps.shop.sink.mode", "quoted octal string"),
        ("sink = { path = \"/t\", mode = \"4755\" }", "", "apps.shop.sink.mode", "setuid"),
        ("sink = { path = \"/t\", mode = \"0040\" }", "", "apps.shop.sink.mode", "owner read and write"),
        (
            "sink = { path = \"/run/t\" }",
            "[[apps]]\nname = \"crm\"\nkind = \"wecom\"\nappid = \"ww1\"\nsecret_env = \"SHOP_SECRET\"\nsink = { path = \"/run/t\" }",
            "apps.crm.sink.path",
            "already the sink of app \"shop\"",
        ),
    ];
    for (sink, rest, key, needle) in cases {
        let e = err(&doc(sink, rest));
        assert_eq!(e.key(), Some(key), "{sink}: {e}");
        assert!(e.to_string().contains(needle), "{sink}: {e}");
        assert!(
            e.to_string().starts_with(&format!("{SOURCE}: {key}: ")),
            "{e}"
        );
    }
    let e = err(&doc("sink = { path = \"/t\", fsync = true }", ""));
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
    assert!(e.to_string().contains("unknown field `fsync`"), "{e}");
}

#[test]
fn render_effective_shows_the_sink_and_parses_back() {
    let text = doc(
        "sink = { path = \"/run/wxbroker/shop.token\", format = \"raw\", mode = \"640\" }",
        &format!("[[apps]]\n{CRM}"),
    );
    let rendered = ok(&text).render_effective();
    assert!(
        rendered.lines().any(|l| l
            == "sink = { path = \"/run/wxbroker/shop.token\", format = \"raw\", mode = \"0640\" }"),
        "{rendered}"
    );
    assert!(
        rendered.lines().any(|l| l == "# sink: not set (disabled)"),
        "{rendered}"
    );
    let again = parse(&rendered).unwrap_or_else(|e| panic!("{e}\n{rendered}"));
    assert_eq!(again.render_effective(), rendered);
    assert_eq!(again.apps[0].sink, ok(&text).apps[0].sink);
}

#[test]
fn a_sink_every_user_can_read_is_warned_about() {
    assert_eq!(
        ok(&doc("sink = { path = \"/t\", mode = \"0640\" }", "")).warnings(),
        Vec::<String>::new()
    );
    let warnings = ok(&doc("sink = { path = \"/t\", mode = \"0644\" }", "")).warnings();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].starts_with("wxbroker.toml: apps.shop.sink.mode: 0644 lets every local user"),
        "{warnings:#?}"
    );
}
