//! What a WeChat API path is, judged the way the upstream (or any
//! normalising hop in front of it) would judge it: after percent-decoding,
//! dot-segment and empty-segment removal, without trailing slashes and
//! without regard to case. The forwarding routes decide from this alone
//! whether a path may be forwarded, so `/cgi-bin/%74oken`,
//! `/CGI-BIN/token/` and `/cgi-bin/./token` are all the token endpoint
//! (DESIGN.md section 17: only the refresher fetches a credential).
//!
//! It is DESIGN.md section 12's path table: which credential a path
//! carries decides what the forwarding routes do with it.

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

/// Decoding rounds before a path is judged: a hop may decode once more
/// than the one before it, so `%2574` must read as `t` too.
const DECODE_ROUNDS: usize = 4;

/// The family of `path` (with or without its leading slash).
pub fn classify(path: &str) -> PathFamily {
    match normalise(path).as_str() {
        "cgi-bin/token" => PathFamily::ClassicToken,
        "cgi-bin/stable_token" => PathFamily::StableToken,
        "cgi-bin/gettoken" => PathFamily::WecomToken,
        "cgi-bin/component/api_component_token"
        | "cgi-bin/component/api_authorizer_token"
        | "cgi-bin/component/api_query_auth" => PathFamily::ComponentCredential,
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
pub fn normalise(path: &str) -> String {
    let mut decoded = path.to_owned();
    for _ in 0..DECODE_ROUNDS {
        let next = String::from_utf8_lossy(&percent_decode(&decoded)).into_owned();
        if next == decoded {
            break;
        }
        decoded = next;
    }
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
}
