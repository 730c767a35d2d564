//! Requests from other local users: `curl` run as another uid (and gid)
//! through `setpriv`, so the broker sees a real peer that is not root.
//! `--path-as-is` keeps dot segments for the path tricks; the
//! `Wxbroker-Client` header claims to be root, a name the broker must not
//! believe.

use std::path::Path;

use serde_json::Value;

/// Who runs `curl`.
#[derive(Debug, Clone, Copy)]
pub enum As {
    /// This process's own user (root).
    Root,
    /// `uid`, with the group of the same number.
    User(u32),
    /// `uid` in group `gid`.
    UserInGroup(u32, u32),
}

impl As {
    /// `uid` when given, else root.
    pub fn uid(uid: Option<u32>) -> As {
        uid.map_or(As::Root, As::User)
    }

    /// `curl` run as this user, for a test that reads curl's raw output.
    pub fn curl_command(self) -> tokio::process::Command {
        let (program, args) = self.program();
        let mut command = tokio::process::Command::new(program);
        command.args(args);
        command
    }

    fn program(self) -> (String, Vec<String>) {
        let (uid, gid) = match self {
            As::Root => return ("curl".to_owned(), Vec::new()),
            As::User(uid) => (uid, uid),
            As::UserInGroup(uid, gid) => (uid, gid),
        };
        let args = vec![
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".to_owned(),
            "curl".to_owned(),
        ];
        ("setpriv".to_owned(), args)
    }
}

/// The arguments of one request, ending with the URL.
fn curl_args(socket: Option<&Path>, method: &str, url: &str, body: Option<&Value>) -> Vec<String> {
    let mut args: Vec<String> = [
        "--silent",
        "--path-as-is",
        "--max-time",
        "15",
        "--request",
        method,
        "--write-out",
        "\n%{http_code}",
        "--header",
        "Wxbroker-Client: root",
    ]
    .map(str::to_owned)
    .to_vec();
    if let Some(socket) = socket {
        args.push("--unix-socket".to_owned());
        args.push(socket.display().to_string());
    }
    if let Some(body) = body {
        args.extend([
            "--header".to_owned(),
            "Content-Type: application/json".to_owned(),
            "--data".to_owned(),
            body.to_string(),
        ]);
    }
    args.push(url.to_owned());
    args
}

/// The status and the body as JSON (Null when it is not) of curl's output.
fn answer(stdout: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(stdout);
    let (body, status) = text.rsplit_once('\n').expect("a status line");
    (
        status.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// One request as `who`, over `socket` when given. Returns the status and
/// the body as JSON (Null when it is not).
pub async fn curl(
    who: As,
    socket: Option<&Path>,
    method: &str,
    url: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let (program, mut args) = who.program();
    args.extend(curl_args(socket, method, url, body));
    let output = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .expect("setpriv and curl run");
    answer(&output.stdout)
}

/// [`curl`] for a test without a runtime at hand: `GET path` over the
/// Unix socket.
pub fn get_blocking(who: As, socket: &Path, path: &str) -> (u16, Value) {
    let (program, mut args) = who.program();
    args.extend(curl_args(
        Some(socket),
        "GET",
        &format!("http://localhost{path}"),
        None,
    ));
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .expect("setpriv and curl run");
    answer(&output.stdout)
}
