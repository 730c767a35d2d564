//! The token book: every token the simulator ever issued, when it expires,
//! until when it is accepted, and which token is current per app and
//! family. It answers "is this token valid now?" for the token-consuming
//! APIs and for tests; the issuing rules live in `state.rs`.

use std::collections::HashMap;

use rand::distributions::{Distribution, Uniform};

use super::clock::SimTime;

/// Token families are independent: a classic fetch never touches a stable
/// token and vice versa, as on WeChat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    Classic,
    Stable,
    Wecom,
}

#[derive(Debug)]
struct Record {
    appid: String,
    family: Family,
    expires_at: SimTime,
    /// Earlier than `expires_at` once a newer token superseded this one.
    valid_until: SimTime,
}

/// What a token-consuming API learns about a presented token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenStatus {
    Valid(Family),
    /// Issued by us, past its `expires_in`: WeChat answers 42001.
    Expired,
    /// Issued by us, not expired, but superseded: WeChat answers 40001
    /// ("invalid or not latest").
    NotLatest,
    /// Never issued: 40001.
    Unknown,
}

/// The current token of one app in one family, plus the one before it
/// (which may still be inside its overlap).
#[derive(Debug, Default)]
struct Lineage {
    current: Option<String>,
    previous: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct TokenBook {
    records: HashMap<String, Record>,
    lineages: HashMap<(String, Family), Lineage>,
}

impl TokenBook {
    /// Mints a new token and makes it current. The caller has already capped
    /// the validity of the tokens it replaces.
    pub(crate) fn issue(
        &mut self,
        appid: &str,
        family: Family,
        now: SimTime,
        lifetime: std::time::Duration,
    ) -> String {
        let token = loop {
            let candidate = mint(family);
            if !self.records.contains_key(&candidate) {
                break candidate;
            }
        };
        let expires_at = now + lifetime;
        self.records.insert(
            token.clone(),
            Record {
                appid: appid.to_owned(),
                family,
                expires_at,
                valid_until: expires_at,
            },
        );
        let lineage = self.lineages.entry((appid.to_owned(), family)).or_default();
        lineage.previous = lineage.current.replace(token.clone());
        token
    }

    /// The current token of `appid` in `family` and its remaining validity,
    /// if it is still valid at `now`.
    pub(crate) fn current(
        &self,
        appid: &str,
        family: Family,
        now: SimTime,
    ) -> Option<(String, SimTime)> {
        let token = self
            .lineages
            .get(&(appid.to_owned(), family))?
            .current
            .as_ref()?;
        let record = self.records.get(token)?;
        (now < record.valid_until).then(|| (token.clone(), record.valid_until - now))
    }

    /// The current and previous token of `appid` in `family`.
    pub(crate) fn lineage(&self, appid: &str, family: Family) -> (Option<String>, Option<String>) {
        self.lineages
            .get(&(appid.to_owned(), family))
            .map(|l| (l.current.clone(), l.previous.clone()))
            .unwrap_or_default()
    }

    /// Shortens a token's validity to at most `until` (never lengthens it).
    pub(crate) fn cap(&mut self, token: &str, until: SimTime) {
        if let Some(record) = self.records.get_mut(token) {
            record.valid_until = record.valid_until.min(until);
        }
    }

    pub(crate) fn status(&self, token: &str, now: SimTime) -> TokenStatus {
        match self.records.get(token) {
            None => TokenStatus::Unknown,
            Some(r) if now >= r.expires_at => TokenStatus::Expired,
            Some(r) if now >= r.valid_until => TokenStatus::NotLatest,
            Some(r) => TokenStatus::Valid(r.family),
        }
    }

    /// The app a token was issued to.
    pub(crate) fn owner(&self, token: &str) -> Option<&str> {
        self.records.get(token).map(|r| r.appid.as_str())
    }

    pub(crate) fn ever_issued(&self, token: &str) -> bool {
        self.records.contains_key(token)
    }
}

/// A token shaped like the real ones: WeChat's start with a numeric prefix
/// and an underscore, WeCom's are a longer bare string; both use the
/// URL-safe alphabet.
fn mint(family: Family) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let (prefix, len) = match family {
        Family::Classic | Family::Stable => ("87_", 133),
        Family::Wecom => ("", 214),
    };
    let pick = Uniform::from(0..ALPHABET.len());
    let mut rng = rand::thread_rng();
    let mut token = String::with_capacity(prefix.len() + len);
    token.push_str(prefix);
    token.extend((0..len).map(|_| ALPHABET[pick.sample(&mut rng)] as char));
    token
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tokens_look_real_and_expire() {
        let mut book = TokenBook::default();
        let t = book.issue(
            "wx1",
            Family::Classic,
            Duration::ZERO,
            Duration::from_secs(10),
        );
        assert!(t.starts_with("87_") && t.len() == 136);
        assert_eq!(
            book.status(&t, Duration::from_secs(9)),
            TokenStatus::Valid(Family::Classic)
        );
        assert_eq!(
            book.status(&t, Duration::from_secs(10)),
            TokenStatus::Expired
        );
        book.cap(&t, Duration::from_secs(5));
        assert_eq!(
            book.status(&t, Duration::from_secs(6)),
            TokenStatus::NotLatest
        );
        assert_eq!(book.status("garbage", Duration::ZERO), TokenStatus::Unknown);
    }
}
