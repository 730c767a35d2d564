//! The users of each app and their credentials: openids, single-use login
//! codes (web OAuth `code` and Mini Program `js_code`), user OAuth access
//! tokens with their refresh tokens, and Mini Program session keys. WeChat
//! keeps these apart from app tokens: a user token is no app token and an
//! app token is no user token, so this book shares nothing with the token
//! book.

use std::collections::HashMap;
use std::time::Duration;

use rand::distributions::{Distribution, Uniform};

use super::clock::SimTime;
use super::wx_error::WxError;

/// A login code lives five minutes and can be used once.
const CODE_LIFETIME: Duration = Duration::from_secs(300);
/// `expires_in` of a user OAuth access token.
pub(crate) const USER_TOKEN_LIFETIME: Duration = Duration::from_secs(7200);
/// A refresh token lives 30 days.
const REFRESH_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// What a user consented to on the OAuth page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Silent login: an openid, no profile (`/sns/userinfo` is 48001).
    Base,
    /// The profile too.
    UserInfo,
}

impl Scope {
    /// The name WeChat uses in URLs and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Base => "snsapi_base",
            Scope::UserInfo => "snsapi_userinfo",
        }
    }

    /// The inverse of [`Scope::as_str`].
    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "snsapi_base" => Some(Scope::Base),
            "snsapi_userinfo" => Some(Scope::UserInfo),
            _ => None,
        }
    }
}

/// Which exchange a code is good for: a web OAuth code is no `js_code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CodeKind {
    OAuth(Scope),
    JsCode,
}

#[derive(Debug)]
struct Code {
    appid: String,
    openid: String,
    kind: CodeKind,
    expires_at: SimTime,
    used: bool,
}

/// A user credential: an OAuth access token or a refresh token.
#[derive(Clone, Debug)]
struct Grant {
    appid: String,
    openid: String,
    scope: Scope,
    expires_at: SimTime,
}

/// The answer to a code or refresh exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UserGrant {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: String,
    pub openid: String,
    pub scope: Scope,
}

/// The answer to `jscode2session`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    pub openid: String,
    pub session_key: String,
}

/// Who a valid user token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TokenOwner {
    pub openid: String,
    pub scope: Scope,
}

#[derive(Debug, Default)]
pub(crate) struct UserBook {
    /// openid -> appid: an openid is one person as seen by one app.
    users: HashMap<String, String>,
    codes: HashMap<String, Code>,
    tokens: HashMap<String, Grant>,
    refresh_tokens: HashMap<String, Grant>,
}

impl UserBook {
    /// A new follower of `appid`; returns the openid.
    pub(crate) fn add_user(&mut self, appid: &str) -> String {
        let openid = self.fresh(|| format!("o{}", random_id(27)));
        self.users.insert(openid.clone(), appid.to_owned());
        openid
    }

    /// Whether `openid` is a user of `appid`.
    pub(crate) fn knows(&self, appid: &str, openid: &str) -> bool {
        self.users.get(openid).is_some_and(|owner| owner == appid)
    }

    /// A web OAuth code, as WeChat hands one to the redirect page.
    pub(crate) fn mint_oauth_code(
        &mut self,
        appid: &str,
        openid: &str,
        scope: Scope,
        now: SimTime,
    ) -> String {
        self.mint_code(appid, openid, CodeKind::OAuth(scope), now)
    }

    /// A Mini Program `js_code`, as `wx.login()` returns one.
    pub(crate) fn mint_js_code(&mut self, appid: &str, openid: &str, now: SimTime) -> String {
        self.mint_code(appid, openid, CodeKind::JsCode, now)
    }

    fn mint_code(&mut self, appid: &str, openid: &str, kind: CodeKind, now: SimTime) -> String {
        let code = self.fresh(|| random_id(32));
        self.codes.insert(
            code.clone(),
            Code {
                appid: appid.to_owned(),
                openid: openid.to_owned(),
                kind,
                expires_at: now + CODE_LIFETIME,
                used: false,
            },
        );
        code
    }

    /// `/sns/oauth2/access_token` after the app's secret was checked.
    pub(crate) fn exchange_oauth_code(
        &mut self,
        appid: &str,
        code: &str,
        now: SimTime,
    ) -> Result<UserGrant, WxError> {
        let (openid, kind) = self.consume(appid, code, now, |k| k != CodeKind::JsCode)?;
        let CodeKind::OAuth(scope) = kind else {
            return Err(invalid_code());
        };
        let refresh_token = self.fresh(|| random_id(86));
        self.refresh_tokens.insert(
            refresh_token.clone(),
            Grant {
                appid: appid.to_owned(),
                openid: openid.clone(),
                scope,
                expires_at: now + REFRESH_LIFETIME,
            },
        );
        Ok(self.issue_token(appid, &openid, scope, refresh_token, now))
    }

    /// `/sns/oauth2/refresh_token`: a new access token; the refresh token
    /// itself keeps its 30 days.
    pub(crate) fn refresh(
        &mut self,
        appid: &str,
        refresh_token: &str,
        now: SimTime,
    ) -> Result<UserGrant, WxError> {
        let grant = match self.refresh_tokens.get(refresh_token) {
            Some(grant) if grant.appid == appid => grant.clone(),
            _ => return Err(WxError::wechat(40030, "invalid refresh_token")),
        };
        if now >= grant.expires_at {
            return Err(WxError::wechat(42002, "refresh_token expired"));
        }
        Ok(self.issue_token(
            appid,
            &grant.openid,
            grant.scope,
            refresh_token.to_owned(),
            now,
        ))
    }

    /// `/sns/jscode2session` after the app's secret was checked.
    pub(crate) fn exchange_js_code(
        &mut self,
        appid: &str,
        js_code: &str,
        now: SimTime,
    ) -> Result<Session, WxError> {
        let (openid, _) = self.consume(appid, js_code, now, |k| k == CodeKind::JsCode)?;
        Ok(Session {
            openid,
            // 16 random bytes, base64: 24 characters ending in `==`.
            session_key: format!("{}==", random_id(22)),
        })
    }

    /// Who `token` belongs to if it is a valid user token: 40001 for a
    /// token WeChat never issued as a user token (app tokens included),
    /// 42001 once expired.
    pub(crate) fn check_token(&self, token: &str, now: SimTime) -> Result<TokenOwner, WxError> {
        let grant = self
            .tokens
            .get(token)
            .ok_or_else(|| WxError::from_code(40001))?;
        if now >= grant.expires_at {
            return Err(WxError::from_code(42001));
        }
        Ok(TokenOwner {
            openid: grant.openid.clone(),
            scope: grant.scope,
        })
    }

    fn issue_token(
        &mut self,
        appid: &str,
        openid: &str,
        scope: Scope,
        refresh_token: String,
        now: SimTime,
    ) -> UserGrant {
        // User tokens share the app tokens' shape but never their values.
        let access_token = self.fresh(|| format!("87_{}", random_id(133)));
        self.tokens.insert(
            access_token.clone(),
            Grant {
                appid: appid.to_owned(),
                openid: openid.to_owned(),
                scope,
                expires_at: now + USER_TOKEN_LIFETIME,
            },
        );
        UserGrant {
            access_token,
            expires_in: USER_TOKEN_LIFETIME.as_secs(),
            refresh_token,
            openid: openid.to_owned(),
            scope,
        }
    }

    /// Marks a code used: 40029 for one never issued to this app, of the
    /// wrong kind or past its five minutes (none of which spends it), 40163
    /// for one already used.
    fn consume(
        &mut self,
        appid: &str,
        code: &str,
        now: SimTime,
        accept: impl Fn(CodeKind) -> bool,
    ) -> Result<(String, CodeKind), WxError> {
        let entry = match self.codes.get_mut(code) {
            Some(entry) if entry.appid == appid && accept(entry.kind) => entry,
            _ => return Err(invalid_code()),
        };
        if entry.used {
            return Err(WxError::wechat(40163, "code been used"));
        }
        if now >= entry.expires_at {
            return Err(invalid_code());
        }
        entry.used = true;
        Ok((entry.openid.clone(), entry.kind))
    }

    /// A value not yet used by any credential or user in this book.
    fn fresh(&self, mut make: impl FnMut() -> String) -> String {
        loop {
            let candidate = make();
            let taken = self.users.contains_key(&candidate)
                || self.codes.contains_key(&candidate)
                || self.tokens.contains_key(&candidate)
                || self.refresh_tokens.contains_key(&candidate);
            if !taken {
                return candidate;
            }
        }
    }
}

fn invalid_code() -> WxError {
    WxError::wechat(40029, "invalid code")
}

/// `len` characters of WeChat's URL-safe alphabet.
pub(crate) fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let pick = Uniform::from(0..ALPHABET.len());
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| ALPHABET[pick.sample(&mut rng)] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::ZERO;

    #[test]
    fn a_code_works_once_for_its_own_app_and_kind() {
        let mut book = UserBook::default();
        let openid = book.add_user("wx1");
        let code = book.mint_oauth_code("wx1", &openid, Scope::UserInfo, NOW);
        assert_eq!(
            book.exchange_oauth_code("wx2", &code, NOW)
                .unwrap_err()
                .errcode,
            40029
        );
        assert_eq!(
            book.exchange_js_code("wx1", &code, NOW)
                .unwrap_err()
                .errcode,
            40029,
            "an OAuth code is no js_code"
        );
        let grant = book.exchange_oauth_code("wx1", &code, NOW).unwrap();
        assert_eq!(grant.openid, openid);
        assert_eq!(
            book.exchange_oauth_code("wx1", &code, NOW)
                .unwrap_err()
                .errcode,
            40163
        );
        let late = book.mint_js_code("wx1", &openid, NOW);
        assert_eq!(
            book.exchange_js_code("wx1", &late, CODE_LIFETIME)
                .unwrap_err()
                .errcode,
            40029
        );
    }

    #[test]
    fn user_tokens_expire_and_refresh() {
        let mut book = UserBook::default();
        let openid = book.add_user("wx1");
        let code = book.mint_oauth_code("wx1", &openid, Scope::Base, NOW);
        let grant = book.exchange_oauth_code("wx1", &code, NOW).unwrap();
        assert_eq!(
            book.check_token(&grant.access_token, NOW).unwrap().scope,
            Scope::Base
        );
        let later = USER_TOKEN_LIFETIME;
        assert_eq!(
            book.check_token(&grant.access_token, later)
                .unwrap_err()
                .errcode,
            42001
        );
        let renewed = book.refresh("wx1", &grant.refresh_token, later).unwrap();
        assert_ne!(renewed.access_token, grant.access_token);
        assert_eq!(renewed.refresh_token, grant.refresh_token);
        assert!(book.check_token(&renewed.access_token, later).is_ok());
        assert_eq!(
            book.refresh("wx2", &grant.refresh_token, later)
                .unwrap_err()
                .errcode,
            40030
        );
        assert_eq!(
            book.refresh("wx1", &grant.refresh_token, REFRESH_LIFETIME)
                .unwrap_err()
                .errcode,
            42002
        );
        assert_eq!(book.check_token("87_app", NOW).unwrap_err().errcode, 40001);
    }
}
