//! What a WeChat API path is, judged the way the upstream (or any
//! normalising hop in front of it) would judge it: after percent-decoding,
//! dot-segment and empty-segment removal, without trailing slashes and
//! without regard to case. The forwarding routes decide from this alone
//! whether a path may be forwarded, so `/cgi-bin/%74oken`,
//! `/CGI-BIN/token/` and `/cgi-bin/./token` are all the token endpoint
//! (DESIGN.md section 17: only the refresher fetches a credential).
//!
//! It is DESIGN.md section 12's path table: which credential a path
//! carries decides what the forwarding routes do with it; and section
//! 21's rule that no forwarding route reaches an operator action or an
//! answer carrying refresh tokens or permanent codes ([`withheld`]), save
//! the authorizer's profile, forwarded with its refresh tokens taken out
//! ([`scrubs_refresh_tokens`]).
//! Every spelling a hop might see (each round of decoding) is judged, so
//! a path refused in one of them is refused.

use std::borrow::Cow;

/// The families of paths the forwarding routes treat differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathFamily {
    /// `/cgi-bin/token`: the classic access token, fetched with the secret.
    ClassicToken,
    /// `/cgi-bin/stable_token`.
    StableToken,
    /// WeCom's `/cgi-bin/gettoken`.
    WecomToken,
    /// An Open Platform credential fetch (`/cgi-bin/component/api_component_token`,
    /// `api_authorizer_token`, `api_query_auth`): never forwarded.
    ComponentCredential,
    /// A WeCom service provider's credential fetch
    /// (`/cgi-bin/service/get_suite_token`, `get_corp_token`,
    /// `get_provider_token`): never forwarded.
    SuiteCredential,
    /// A JS-SDK ticket fetch: `/cgi-bin/ticket/getticket`, WeCom's
    /// `/cgi-bin/get_jsapi_ticket` and `/cgi-bin/ticket/get`.
    Ticket,
    /// `/sns/oauth2/access_token`, `/sns/jscode2session` and
    /// `/sns/component/jscode2session`: they carry the app secret, which
    /// the broker puts in so a client never needs it.
    SnsSecret,
    /// Every other `/sns/*` path (`/sns/userinfo`, `/sns/auth`,
    /// `/sns/oauth2/refresh_token`): it carries the USER's OAuth token,
    /// which is none of the broker's business.
    SnsUser,
    /// Anything else: a call that consumes the app's token.
    Other,
}

/// What a forwarded call carries, and so what the proxy does to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    /// The app's access token: the broker's own is put in place of the
    /// client's, and a rejection of it is the broker's to handle.
    AppToken,
    /// The user's OAuth token: forwarded untouched, and a 40001 is about
    /// the user's token, never the app's.
    UserToken,
    /// The app secret: the app's real `appid` and `secret` are put in.
    /// Never retried, since a 40001 here is not about any token.
    AppSecret,
}

impl PathFamily {
    /// Whether calling this path upstream would issue a credential the
    /// broker owns, superseding the one it serves.
    pub fn fetches_credential(self) -> bool {
        matches!(
            self,
            PathFamily::ClassicToken
                | PathFamily::StableToken
                | PathFamily::WecomToken
                | PathFamily::ComponentCredential
                | PathFamily::SuiteCredential
        )
    }

    /// What a call on a path of this family carries when forwarded.
    pub fn carries(self) -> Carries {
        match self {
            PathFamily::SnsSecret => Carries::AppSecret,
            PathFamily::SnsUser => Carries::UserToken,
            _ => Carries::AppToken,
        }
    }
}

/// Why no forwarding route passes a path upstream, whatever it carries
/// and whoever asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withheld {
    /// It fetches a credential the broker owns (section 17): forwarding it
    /// would supersede the one every other client is using. Names the
    /// endpoint.
    CredentialFetch(&'static str),
    /// An operator action: `clear_quota` in any spelling, version and
    /// family spends one of the account's ten resets a month.
    OperatorAction,
    /// Its answer carries refresh tokens or permanent codes, which only
    /// the broker holds. Names the endpoint.
    SecretAnswer(&'static str),
}

impl std::fmt::Display for Withheld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Withheld::CredentialFetch(endpoint) => {
                write!(f, "{endpoint} fetches a credential, which only the broker's refresher does")
            }
            Withheld::OperatorAction => f.write_str(
                "clear_quota is an operator action: run `wxbroker clear-quota` on the broker's Unix socket",
            ),
            Withheld::SecretAnswer(endpoint) => write!(
                f,
                "{endpoint} answers with refresh tokens or permanent codes, which only the broker holds"
            ),
        }
    }
}

/// Endpoints whose answers carry an authorizer's refresh token or a
/// WeCom permanent code, by the last segment that names them.
const SECRET_ANSWERS: [&str; 4] = [
    "api_get_authorizer_list",
    "api_query_auth",
    "get_permanent_code",
    "get_auth_info",
];

/// Endpoints forwarded with every refresh token taken out of their
/// answers: SDKs call them for an authorizer's profile, which they need,
/// beside its refresh token, which only the broker may hold.
const SCRUBBED_ANSWERS: [&str; 1] = ["api_get_authorizer_info"];

/// Whether the answer to `path` is relayed only with its refresh tokens
/// taken out (`SCRUBBED_ANSWERS`), judged in every spelling.
pub fn scrubs_refresh_tokens(path: &str) -> bool {
    judged(path, |spellings| {
        spellings.iter().any(|spelling| {
            spelling
                .split('/')
                .any(|segment| SCRUBBED_ANSWERS.contains(&segment))
        })
    })
}

/// Why `path` may never be forwarded, if it may not: judged in every
/// spelling a hop might route on ([`spellings`]).
pub fn withheld(path: &str) -> Option<Withheld> {
    judged(path, |spellings| withheld_in(spellings))
}

fn withheld_in<S: AsRef<str>>(spellings: &[S]) -> Option<Withheld> {
    let fetch = spellings
        .iter()
        .map(|spelling| classify_normalised(spelling.as_ref()))
        .find(|family| family.fetches_credential());
    if let Some(family) = fetch {
        return Some(Withheld::CredentialFetch(match family {
            PathFamily::ClassicToken => "/cgi-bin/token",
            PathFamily::StableToken => "/cgi-bin/stable_token",
            PathFamily::WecomToken => "/cgi-bin/gettoken",
            PathFamily::SuiteCredential => "a WeCom suite credential endpoint",
            _ => "an Open Platform credential endpoint",
        }));
    }
    if spellings
        .iter()
        .any(|spelling| is_operator_action(spelling.as_ref()))
    {
        return Some(Withheld::OperatorAction);
    }
    spellings.iter().find_map(|spelling| {
        spelling
            .as_ref()
            .split('/')
            .find_map(|segment| SECRET_ANSWERS.into_iter().find(|name| *name == segment))
            .map(Withheld::SecretAnswer)
    })
}

/// `judge` run over `path`'s [`spellings`], without copying the one
/// spelling of a path that is already normal (most are).
fn judged<R>(path: &str, judge: impl FnOnce(&[&str]) -> R) -> R {
    if let Some(plain) = already_normal(path) {
        return judge(&[plain]);
    }
    let spellings = spellings(path);
    let spellings: Vec<&str> = spellings.iter().map(String::as_str).collect();
    judge(&spellings)
}

/// `clear_quota` in any family (`/cgi-bin/`, `/cgi-bin/component/`,
/// WeCom's `/cgi-bin/service/`), version (`/v2`) or spelling
/// (`clear-quota`, `clearquota`), and a `quota/clear` or `quota/reset`.
fn is_operator_action(spelling: &str) -> bool {
    // Every spelling of an action names a quota once separators are gone:
    // looked for in the last five letters seen, without a copy.
    const QUOTA: u64 = u64::from_be_bytes([0, 0, 0, b'q', b'u', b'o', b't', b'a']);
    let mut last_five = 0u64;
    let names_quota = spelling
        .bytes()
        .filter(|b| !matches!(b, b'_' | b'-' | b'.'))
        .any(|b| {
            last_five = ((last_five << 8) | u64::from(b)) & 0xff_ffff_ffff;
            last_five == QUOTA
        });
    if !names_quota {
        return false;
    }
    let squashed: Vec<String> = spelling
        .split('/')
        .map(|segment| segment.replace(['_', '-', '.'], ""))
        .collect();
    let named = squashed.iter().any(|segment| {
        ["clearquota", "resetquota", "quotaclear", "quotareset"]
            .iter()
            .any(|action| segment.contains(action))
    });
    let nested = squashed
        .windows(2)
        .any(|pair| pair[0] == "quota" && matches!(pair[1].as_str(), "clear" | "reset"));
    named || nested
}

/// A forwarded path, judged once: every spelling a client may be
/// allowed or refused by.
#[derive(Debug, Clone)]
pub struct ForwardPath {
    spellings: Vec<String>,
}

impl ForwardPath {
    pub fn new(path: &str) -> Self {
        ForwardPath {
            spellings: spellings(path),
        }
    }

    /// The normalised spellings (no leading slash, lowercase).
    pub fn spellings(&self) -> &[String] {
        &self.spellings
    }

    /// The path as the upstream would finally route it ([`normalise`]).
    pub fn normal(&self) -> &str {
        self.spellings.last().map_or("", String::as_str)
    }

    /// The path's family ([`classify`]).
    pub fn family(&self) -> PathFamily {
        classify_normalised(self.normal())
    }

    /// Why no forwarding route passes the path upstream ([`withheld`]).
    pub fn withheld(&self) -> Option<Withheld> {
        withheld_in(&self.spellings)
    }

    /// The path as the upstream would finally route it, for messages:
    /// `/` and the most decoded spelling, cut at 256 characters.
    pub fn shown(&self) -> String {
        format!("/{}", self.normal().chars().take(256).collect::<String>())
    }
}

/// `path` normalised after one decoding, after two, and so on until
/// decoding changes nothing (at most four times); each spelling
/// once. A hop that decodes fewer times than the next routes on one of
/// these, so a rule must hold for all of them.
pub fn spellings(path: &str) -> Vec<String> {
    if let Some(plain) = already_normal(path) {
        return vec![plain.to_owned()];
    }
    let mut spellings: Vec<String> = Vec::new();
    let mut decoded = path.to_owned();
    for _ in 0..DECODE_ROUNDS {
        let next = String::from_utf8_lossy(&percent_decode(&decoded)).into_owned();
        let spelling = segments(&next);
        // Kept once, and the most decoded last.
        spellings.retain(|earlier| *earlier != spelling);
        spellings.push(spelling);
        if next == decoded {
            break;
        }
        decoded = next;
    }
    spellings
}

/// Decoding rounds before a path is judged: a hop may decode once more
/// than the one before it, so `%2574` must read as `t` too.
const DECODE_ROUNDS: usize = 4;

/// The family of `path` (with or without its leading slash).
pub fn classify(path: &str) -> PathFamily {
    classify_normalised(&normalise(path))
}

/// [`classify`] for a path [`normalise`]d already.
fn classify_normalised(path: &str) -> PathFamily {
    match path {
        "cgi-bin/token" => PathFamily::ClassicToken,
        "cgi-bin/stable_token" => PathFamily::StableToken,
        "cgi-bin/gettoken" => PathFamily::WecomToken,
        "cgi-bin/component/api_component_token"
        | "cgi-bin/component/api_authorizer_token"
        | "cgi-bin/component/api_query_auth" => PathFamily::ComponentCredential,
        "cgi-bin/service/get_suite_token"
        | "cgi-bin/service/get_corp_token"
        | "cgi-bin/service/get_provider_token" => PathFamily::SuiteCredential,
        "cgi-bin/ticket/getticket" | "cgi-bin/get_jsapi_ticket" | "cgi-bin/ticket/get" => {
            PathFamily::Ticket
        }
        "sns/oauth2/access_token" | "sns/jscode2session" | "sns/component/jscode2session" => {
            PathFamily::SnsSecret
        }
        sns if sns.starts_with("sns/") => PathFamily::SnsUser,
        _ => PathFamily::Other,
    }
}

/// `path` as the upstream would see it after every normalisation a hop
/// might apply: decoded (repeatedly), lowercased, with empty and `.`
/// segments dropped, `..` applied, and no leading or trailing slash.
/// Borrowed from `path` when it is already so.
pub fn normalise(path: &str) -> Cow<'_, str> {
    if let Some(plain) = already_normal(path) {
        return Cow::Borrowed(plain);
    }
    let mut decoded = path.to_owned();
    for _ in 0..DECODE_ROUNDS {
        let next = String::from_utf8_lossy(&percent_decode(&decoded)).into_owned();
        if next == decoded {
            break;
        }
        decoded = next;
    }
    Cow::Owned(segments(&decoded))
}

/// `path` without its leading slash when that is already its one
/// spelling: nothing to decode (no `%`), no uppercase, backslash, `;`,
/// space or control character, and no empty, `.` or `..` segment. Most
/// paths are, and are judged without decoding them four times.
fn already_normal(path: &str) -> Option<&str> {
    /// What a byte is to a normal path: any other byte, a letter, digit,
    /// `_` or `-`, a `.`, or the `/` between segments.
    const OTHER: u8 = 0;
    const PLAIN: u8 = 1;
    const DOT: u8 = 2;
    const SLASH: u8 = 3;
    const CLASS: [u8; 256] = {
        let mut class = [OTHER; 256];
        let mut byte = 0;
        while byte < 256 {
            let b = byte as u8;
            class[byte] = match b {
                b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => PLAIN,
                b'.' => DOT,
                b'/' => SLASH,
                _ => OTHER,
            };
            byte += 1;
        }
        class
    };
    // A segment is tidy unless it is empty, `.` or `..`: one made of one
    // or two dots and nothing else.
    let tidy = |length: usize, dots: usize| length > 0 && (dots < length || length > 2);
    let path = path.strip_prefix('/').unwrap_or(path);
    let (mut length, mut dots) = (0, 0);
    for &byte in path.as_bytes() {
        match CLASS[usize::from(byte)] {
            PLAIN => length += 1,
            DOT => (length, dots) = (length + 1, dots + 1),
            SLASH if tidy(length, dots) => (length, dots) = (0, 0),
            _ => return None,
        }
    }
    tidy(length, dots).then_some(path)
}

/// A decoded path with empty and `.` segments dropped, `..` applied,
/// lowercased, without leading or trailing slash.
fn segments(decoded: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split(['/', '\\']) {
        // A `;` starts path parameters for some servers: what precedes it
        // is the segment they route on.
        let segment = segment.split(';').next().unwrap_or_default().trim();
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    segments.join("/").to_ascii_lowercase()
}

/// Percent-decodes `input`; a `%` not followed by two hex digits stays.
pub fn percent_decode(input: &str) -> Vec<u8> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) if hex(hi).is_some() && hex(lo).is_some() => {
                let value = hex(hi).unwrap_or(0) * 16 + hex(lo).unwrap_or(0);
                out.push(value as u8);
                i += 3;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_endpoints_are_recognised_however_they_are_spelled() {
        for path in [
            "/cgi-bin/token",
            "cgi-bin/token",
            "/cgi-bin/%74oken",
            "/cgi-bin/%2574oken",
            "/%63gi-bin/token",
            "/CGI-BIN/Token",
            "/cgi-bin/token/",
            "/cgi-bin//token",
            "/cgi-bin/./token",
            "/cgi-bin/x/../token",
            "/cgi-bin%2ftoken",
            "/cgi-bin\\token",
            "/cgi-bin/token;jsessionid=1",
        ] {
            assert_eq!(classify(path), PathFamily::ClassicToken, "{path}");
            assert!(classify(path).fetches_credential());
        }
        assert_eq!(classify("/cgi-bin/stable%5Ftoken"), PathFamily::StableToken);
        assert_eq!(classify("/cgi-bin/gettoken"), PathFamily::WecomToken);
        assert_eq!(
            classify("/cgi-bin/component/api_component_token"),
            PathFamily::ComponentCredential
        );
        assert_eq!(classify("/cgi-bin/ticket/getticket"), PathFamily::Ticket);
        assert_eq!(classify("/cgi-bin/get_jsapi_ticket"), PathFamily::Ticket);
        for path in [
            "/cgi-bin/service/get_suite_token",
            "/cgi-bin/service/%67et_corp_token",
            "/CGI-BIN/service/get_provider_token/",
        ] {
            assert_eq!(classify(path), PathFamily::SuiteCredential, "{path}");
            assert!(matches!(
                withheld(path),
                Some(Withheld::CredentialFetch(
                    "a WeCom suite credential endpoint"
                ))
            ));
        }
        assert_eq!(
            classify("/cgi-bin/service/get_pre_auth_code"),
            PathFamily::Other
        );
    }

    #[test]
    fn operator_actions_are_withheld_in_every_spelling_version_and_family() {
        for path in [
            "/cgi-bin/clear_quota",
            "cgi-bin/clear_quota",
            "/cgi-bin/%63lear_quota",
            "/cgi-bin/%2563lear_quota",
            "/CGI-BIN/Clear_Quota/",
            "/cgi-bin//clear_quota",
            "/cgi-bin/./clear_quota",
            "/cgi-bin/x/../clear_quota",
            "/cgi-bin%2fclear_quota",
            "/cgi-bin/clear_quota;x=1",
            "/cgi-bin/clear_quota/v2",
            "/cgi-bin/component/clear_quota",
            "/cgi-bin/component/clear_quota/v2",
            "/cgi-bin/service/clear_quota",
            "/wxa/clear_quota",
            "/cgi-bin/clear-quota",
            "/cgi-bin/openapi/quota/clear",
            "/cgi-bin/openapi/quota/reset",
            // Refused in a spelling a once-decoding hop would route on,
            // even where full decoding makes it something else.
            "/cgi-bin/clear_quota/%252e%252e/message/custom/send",
        ] {
            assert_eq!(withheld(path), Some(Withheld::OperatorAction), "{path}");
        }
        assert_eq!(withheld("/cgi-bin/openapi/quota/get"), None);
        assert_eq!(withheld("/cgi-bin/message/custom/send"), None);
    }

    #[test]
    fn answers_carrying_refresh_tokens_or_permanent_codes_are_withheld() {
        for (path, endpoint) in [
            (
                "/cgi-bin/component/api_get_authorizer_list",
                "api_get_authorizer_list",
            ),
            (
                "/cgi-bin/component/%61pi_get_authorizer_list",
                "api_get_authorizer_list",
            ),
            ("/cgi-bin/service/get_permanent_code", "get_permanent_code"),
            (
                "/cgi-bin/service/v2/get_permanent_code",
                "get_permanent_code",
            ),
            ("/cgi-bin/service/get_auth_info", "get_auth_info"),
        ] {
            assert_eq!(
                withheld(path),
                Some(Withheld::SecretAnswer(endpoint)),
                "{path}"
            );
        }
        // A credential fetch stays one, whatever else it hands out.
        assert!(matches!(
            withheld("/cgi-bin/component/api_query_auth"),
            Some(Withheld::CredentialFetch(_))
        ));
        assert!(matches!(
            withheld("/cgi-bin/%2574oken"),
            Some(Withheld::CredentialFetch("/cgi-bin/token"))
        ));
        assert_eq!(
            withheld("/cgi-bin/component/api_get_authorizer_option"),
            None
        );
        // Forwarded, its refresh tokens taken out of the answer.
        assert_eq!(withheld("/cgi-bin/component/api_get_authorizer_info"), None);
    }

    #[test]
    fn the_authorizer_profile_is_scrubbed_however_it_is_spelled() {
        for path in [
            "/cgi-bin/component/api_get_authorizer_info",
            "cgi-bin/component/%61pi_get_authorizer_info",
            "/cgi-bin/component/%2561pi_get_authorizer_info",
            "/CGI-BIN/Component/API_Get_Authorizer_Info/",
            "/cgi-bin/component/x/../api_get_authorizer_info",
            "/cgi-bin/component/api_get_authorizer_info;x=1",
        ] {
            assert!(scrubs_refresh_tokens(path), "{path}");
        }
        assert!(!scrubs_refresh_tokens(
            "/cgi-bin/component/api_get_authorizer_option"
        ));
        assert!(!scrubs_refresh_tokens("/sns/oauth2/refresh_token"));
    }

    #[test]
    fn spellings_end_with_the_normalised_path() {
        assert_eq!(spellings("/cgi-bin/token"), ["cgi-bin/token"]);
        assert_eq!(
            spellings("/a/%252e%252e/b"),
            ["a/%2e%2e/b", "b"],
            "each decoding's reading, the fullest last"
        );
        assert_eq!(
            spellings("/x/%2574").last().unwrap(),
            &normalise("/x/%2574")
        );
        assert_eq!(ForwardPath::new("/A/%62").shown(), "/a/b");
    }

    #[test]
    fn sns_paths_carry_the_secret_or_the_users_token() {
        for path in [
            "/sns/oauth2/access_token",
            "/sns/jscode2session",
            "/SNS/%6Ascode2session",
            "/sns/component/jscode2session",
        ] {
            assert_eq!(classify(path).carries(), Carries::AppSecret, "{path}");
        }
        for path in ["/sns/userinfo", "/sns/auth", "/sns/oauth2/refresh_token"] {
            assert_eq!(classify(path).carries(), Carries::UserToken, "{path}");
        }
        assert_eq!(classify("/tcb/databasequery").carries(), Carries::AppToken);
        assert_eq!(classify("/snsx/userinfo").carries(), Carries::AppToken);
    }

    #[test]
    fn other_paths_are_token_consuming_calls() {
        for path in [
            "/tcb/invokecloudfunction",
            "/cgi-bin/tokens",
            "/cgi-bin/token_x",
            "/cgi-bin/message/custom/send",
            "/cgi-bin/%",
        ] {
            assert_eq!(classify(path), PathFamily::Other, "{path}");
            assert!(!classify(path).fetches_credential());
        }
    }

    #[test]
    fn a_path_already_normal_is_its_own_one_spelling() {
        for path in [
            "cgi-bin/getcallbackip",
            "/tcb/invokecloudfunction",
            "wxa/msg_sec_check",
        ] {
            let bare = path.trim_start_matches('/');
            assert_eq!(spellings(path), [bare]);
            assert_eq!(normalise(path), bare);
        }
        // Anything a hop could read otherwise takes the long way, and
        // gives what it always gave.
        for path in [
            "cgi-bin/Token",
            "cgi-bin//token",
            "cgi-bin/./token",
            "a/../cgi-bin/token",
            "cgi-bin/%74oken",
            "cgi-bin/token/",
            "cgi-bin\\token",
            "cgi-bin/token;x",
        ] {
            assert!(already_normal(path).is_none(), "{path}");
            assert_eq!(classify(path), PathFamily::ClassicToken, "{path}");
        }
        // Dots are plain within a segment, and a segment of three is a name.
        for (path, normal) in [
            ("/a.b/.c/d./...", Some("a.b/.c/d./...")),
            ("a/.", None),
            (".", None),
            ("..", None),
            ("", None),
            ("/", None),
            ("a/ b", None),
        ] {
            assert_eq!(already_normal(path), normal, "{path}");
        }
    }
}
