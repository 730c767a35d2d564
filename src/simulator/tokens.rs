//! The token book: every token the simulator ever issued, when it expires,
//! until when it is accepted, and which token is current per holder and
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

/// Who a token is issued to: an app, or for WeCom one app of a corp. Every
/// WeCom app (agent) has its own secret and its own token, so two agents of
/// one corp never share one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Holder {
    /// The appid, or the WeCom corpid.
    pub appid: String,
    /// The WeCom app secret the token was fetched with; `None` for WeChat.
    pub agent: Option<String>,
}

impl Holder {
    /// An Official Account / Mini Program app.
    pub(crate) fn app(appid: &str) -> Self {
        Holder {
            appid: appid.to_owned(),
            agent: None,
        }
    }

    /// One WeCom app of a corp, named by its secret.
    pub(crate) fn wecom(corpid: &str, corpsecret: &str) -> Self {
        Holder {
            appid: corpid.to_owned(),
            agent: Some(corpsecret.to_owned()),
        }
    }
}

#[derive(Debug)]
struct Record {
    holder: Holder,
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

/// The current token of one holder in one family, plus the one before it
/// (which may still be inside its overlap).
#[derive(Debug, Default)]
struct Lineage {
    current: Option<String>,
    previous: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct TokenBook {
    records: HashMap<String, Record>,
    lineages: HashMap<(Holder, Family), Lineage>,
}

impl TokenBook {
    /// Mints a new token and makes it current. The caller has already capped
    /// the validity of the tokens it replaces.
    pub(crate) fn issue(
        &mut self,
        holder: &Holder,
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
                holder: holder.clone(),
                family,
                expires_at,
                valid_until: expires_at,
            },
        );
        let lineage = self.lineages.entry((holder.clone(), family)).or_default();
        lineage.previous = lineage.current.replace(token.clone());
        token
    }

    /// The current token of `holder` in `family` and its remaining
    /// validity, if it is still valid at `now`.
    pub(crate) fn current(
        &self,
        holder: &Holder,
        family: Family,
        now: SimTime,
    ) -> Option<(String, SimTime)> {
        let token = self
            .lineages
            .get(&(holder.clone(), family))?
            .current
            .as_ref()?;
        let record = self.records.get(token)?;
        (now < record.valid_until).then(|| (token.clone(), record.valid_until - now))
    }

    /// The current and previous token of `holder` in `family`.
    pub(crate) fn lineage(
        &self,
        holder: &Holder,
        family: Family,
    ) -> (Option<String>, Option<String>) {
        self.lineages
            .get(&(holder.clone(), family))
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

    /// The app (or WeCom corp) a token was issued to.
    pub(crate) fn owner(&self, token: &str) -> Option<&str> {
        self.records.get(token).map(|r| r.holder.appid.as_str())
    }

    /// Who a token was issued to, down to the WeCom app.
    pub(crate) fn holder(&self, token: &str) -> Option<&Holder> {
        self.records.get(token).map(|r| &r.holder)
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
            &Holder::app("wx1"),
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
