//! The rid book: every error answer the simulator gave with a `rid` in its
//! errmsg, remembered as WeChat remembers them (7 days, and only for the
//! account that made the call), for `rid/get`.

use std::collections::HashMap;

use serde_json::{json, Value};

/// How long WeChat keeps a rid.
const KEPT_SECS: u64 = 7 * 86_400;

/// One failed call, as `rid/get` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RidRecord {
    /// The account the call was made for, when the simulator could tell
    /// (its token's owner, or the appid it carried).
    pub appid: Option<String>,
    /// Unix seconds.
    pub invoke_time: u64,
    /// The query string, `access_token` included, as WeChat shows it.
    pub request_url: String,
    pub request_body: String,
    pub response_body: String,
    pub client_ip: String,
}

impl RidRecord {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "invoke_time": self.invoke_time,
            "cost_in_ms": 3,
            "request_url": self.request_url,
            "request_body": self.request_body,
            "response_body": self.response_body,
            "client_ip": self.client_ip,
        })
    }
}

/// Why `rid/get` found nothing to tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RidMiss {
    /// Never given, or older than 7 days: 76001.
    NotFound,
    /// Given for another account: 76003.
    OtherAccount,
}

#[derive(Debug, Default)]
pub(crate) struct RidBook {
    records: HashMap<String, RidRecord>,
}

impl RidBook {
    pub(crate) fn remember(&mut self, rid: String, record: RidRecord) {
        self.records.insert(rid, record);
    }

    /// The record of `rid`, for a call by `asker` at `now` (unix seconds).
    pub(crate) fn lookup(&self, rid: &str, asker: &str, now: u64) -> Result<RidRecord, RidMiss> {
        let record = self
            .records
            .get(rid)
            .filter(|record| now.saturating_sub(record.invoke_time) < KEPT_SECS)
            .ok_or(RidMiss::NotFound)?;
        match &record.appid {
            Some(appid) if appid != asker => Err(RidMiss::OtherAccount),
            _ => Ok(record.clone()),
        }
    }
}

/// The rid WeChat put at the end of an errmsg (`... rid: 6172-...`).
pub(crate) fn rid_in(errmsg: &str) -> Option<&str> {
    let (_, rid) = errmsg.rsplit_once(" rid: ")?;
    let rid = rid.trim();
    (!rid.is_empty()).then_some(rid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(appid: &str, at: u64) -> RidRecord {
        RidRecord {
            appid: Some(appid.to_owned()),
            invoke_time: at,
            request_url: String::new(),
            request_body: String::new(),
            response_body: String::new(),
            client_ip: "127.0.0.1".into(),
        }
    }

    #[test]
    fn rids_are_kept_a_week_for_their_own_account() {
        let mut book = RidBook::default();
        book.remember("r1".into(), record("wx1", 1_000));
        assert!(book.lookup("r1", "wx1", 1_000 + KEPT_SECS - 1).is_ok());
        assert_eq!(
            book.lookup("r1", "wx1", 1_000 + KEPT_SECS),
            Err(RidMiss::NotFound)
        );
        assert_eq!(book.lookup("r1", "wx2", 1_000), Err(RidMiss::OtherAccount));
        assert_eq!(book.lookup("r2", "wx1", 1_000), Err(RidMiss::NotFound));
    }

    #[test]
    fn the_rid_is_read_from_the_end_of_an_errmsg() {
        assert_eq!(
            rid_in("invalid appid rid: 61725984-6126f6f9-040f19c4"),
            Some("61725984-6126f6f9-040f19c4")
        );
        assert_eq!(rid_in("invalid appid"), None);
    }
}
