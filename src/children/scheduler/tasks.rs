//! The units of work the scheduler starts, each on its own task: a
//! child's refresh (with the fleet's compare-and-refresh before it), the
//! exchange of a pushed authorization code, the re-reading of a changed
//! child's name, and the recovery of every child from upstream's list.
//! Each ends in an [`Outcome`] the scheduler applies; none touches the
//! table.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::children::policy::{Failed, FetchBudget};
use crate::children::record::{ChildRecord, ChildStore};
use crate::children::source::{ChildGrant, ChildSource};
use crate::clock::Clock;
use crate::errors::Chain;
use crate::secret::AccessToken;
use crate::wechat::{self, FetchError};

/// What a unit of work came to.
pub(super) enum Outcome {
    Refreshed {
        id: Box<str>,
        result: Result<ChildRecord, Failed>,
    },
    /// The fleet refreshed it already, or holds it right now.
    Settled {
        id: Box<str>,
        record: Option<ChildRecord>,
    },
    Authorized(Result<ChildRecord, FetchError>),
    Described {
        id: Box<str>,
        result: Result<String, FetchError>,
    },
    Recovered(Result<Vec<ChildRecord>, FetchError>),
}

/// How long a pushed authorization code is exchanged for at most: WeChat's
/// and WeCom's are good for ten minutes at least, and one lost to a
/// transient failure would cost the child's owner a new authorization.
const EXCHANGE_RETRY_FOR: Duration = Duration::from_secs(9 * 60);

/// The record of a fresh grant. An answer without a durable grant (or a
/// name) keeps the held one: an empty value never replaces a good one.
pub(super) fn record_of(
    grant: ChildGrant,
    held: (&str, &str),
    sent_ms: u64,
    now_ms: u64,
    authorized_at: u64,
) -> ChildRecord {
    let (held_refresh, held_name) = held;
    let refresh_token = if grant.refresh_token.is_empty() {
        held_refresh.to_owned()
    } else {
        grant.refresh_token
    };
    let name = if grant.name.is_empty() {
        held_name.to_owned()
    } else {
        grant.name
    };
    ChildRecord {
        appid: grant.id,
        refresh_token,
        access_token: grant.access_token.expose().to_owned(),
        expires_at_ms: sent_ms.saturating_add(
            grant
                .expires_in
                .min(wechat::MAX_LIFETIME_SECS)
                .saturating_mul(1000),
        ),
        fetched_at_ms: now_ms,
        authorized_at,
        name,
    }
}

/// Tells the parent's refresher when upstream refused its token (unless
/// the kind reads that errcode as the child's own fault).
async fn report_rejection(source: &dyn ChildSource, parent: &AccessToken, err: &FetchError) {
    if let FetchError::Api { errcode, .. } = err {
        if wechat::is_token_rejected(*errcode) && source.config_fix(*errcode).is_none() {
            source.parent_rejected(parent).await;
        }
    }
}

pub(super) struct RefreshTask {
    pub(super) kind: &'static str,
    pub(super) source: Arc<dyn ChildSource>,
    pub(super) store: Arc<dyn ChildStore>,
    pub(super) budget: Arc<FetchBudget>,
    pub(super) clock: Clock,
    pub(super) rate: u32,
    pub(super) id: Box<str>,
    pub(super) refresh_token: Box<str>,
    pub(super) held_fetched_at_ms: u64,
    pub(super) authorized_at: u64,
    pub(super) name: String,
}

impl RefreshTask {
    pub(super) async fn run(mut self) -> Outcome {
        let id = self.id.clone();
        // The parent first: a fleet permit taken while waiting for it
        // would count a second in which nothing was sent, and the wait's
        // end would then send more than the fleet's rate in one second.
        let parent = match self.parent().await {
            Ok(parent) => parent,
            Err(err) => {
                return Outcome::Refreshed {
                    id,
                    result: Err(err),
                }
            }
        };
        if self.store.is_shared() {
            match self.fleet_check().await {
                Ok(Some(refresh_token)) => self.refresh_token = refresh_token.into(),
                Ok(None) => {}
                Err(outcome) => return *outcome,
            }
        }
        let result = self.fetch(&parent).await;
        if self.store.is_shared() {
            let _ = self.store.unlock_child(&id).await;
        }
        Outcome::Refreshed { id, result }
    }

    /// In a fleet: another broker holds this child, or refreshed it
    /// already (adopt that), or the fleet's rate is spent this second;
    /// else the lock is ours, and the fleet's durable grant (the one
    /// upstream holds, whoever rotated it last) is what to fetch with,
    /// unless the held one is newer.
    async fn fleet_check(&self) -> Result<Option<String>, Box<Outcome>> {
        let settled = |record| {
            Err(Box::new(Outcome::Settled {
                id: self.id.clone(),
                record,
            }))
        };
        if !self.store.lock_child(&self.id).await.unwrap_or(false) {
            return settled(None);
        }
        let shared = self.store.shared_child(&self.id).await.ok().flatten();
        if let Some(shared) = &shared {
            let now = self.clock.now_ms();
            let fresher = shared.fetched_at_ms > self.held_fetched_at_ms
                && !shared.access_token.is_empty()
                && shared.expires_at_ms > now
                && shared.token_implausible(now).is_none();
            if fresher {
                let _ = self.store.unlock_child(&self.id).await;
                return settled(Some(shared.clone()));
            }
        }
        if !self.store.fetch_permit(self.rate).await.unwrap_or(true) {
            let _ = self.store.unlock_child(&self.id).await;
            return settled(None);
        }
        // A record older than the one held (a promoted replica that missed
        // the last write) carries a grant that may be spent: keep the held
        // one then.
        Ok(shared
            .filter(|shared| shared.fetched_at_ms >= self.held_fetched_at_ms)
            .map(|shared| shared.refresh_token)
            .filter(|refresh| !refresh.is_empty()))
    }

    /// The parent's token the fetch is made with, waited for; none for a
    /// kind that needs no parent.
    async fn parent(&self) -> Result<AccessToken, Failed> {
        if self.source.fetch_needs_parent() {
            self.source.parent_token().await.map_err(Failed::Upstream)
        } else {
            Ok(AccessToken::new(""))
        }
    }

    async fn fetch(&self, parent: &AccessToken) -> Result<ChildRecord, Failed> {
        if !self.budget.spend(self.clock.now_secs()).await {
            return Err(Failed::BudgetSpent);
        }
        let sent = self.clock.now_ms();
        let grant = self
            .source
            .fetch(parent, &self.id, &self.refresh_token)
            .await;
        let grant = match grant {
            Ok(grant) => grant,
            Err(err) => {
                report_rejection(self.source.as_ref(), parent, &err).await;
                return Err(Failed::Upstream(err));
            }
        };
        let record = record_of(
            grant,
            (&self.refresh_token, &self.name),
            sent,
            self.clock.now_ms(),
            self.authorized_at,
        );
        // Durable before it is served: the durable grant may have rotated.
        if let Err(err) = self
            .store
            .save_children(std::slice::from_ref(&record))
            .await
        {
            error!(id = %self.id, error = %Chain(&err), "could not store a {}'s refresh token; keeping it in memory and serving", self.kind);
        }
        Ok(record)
    }
}

pub(super) struct AuthorizeTask {
    pub(super) source: Arc<dyn ChildSource>,
    pub(super) store: Arc<dyn ChildStore>,
    pub(super) clock: Clock,
    pub(super) cancel: CancellationToken,
    pub(super) id: String,
    pub(super) code: String,
}

impl AuthorizeTask {
    pub(super) async fn run(self) -> Outcome {
        Outcome::Authorized(self.exchange_patiently().await)
    }

    /// The exchange, retried after a transient failure (the parent has no
    /// token yet, a timeout) with the engine's backoff while the code may
    /// still be good, and never past shutdown.
    async fn exchange_patiently(&self) -> Result<ChildRecord, FetchError> {
        let deadline = tokio::time::Instant::now() + EXCHANGE_RETRY_FOR;
        let mut backoff = crate::engine::backoff::Backoff::default();
        loop {
            let result = self.exchange().await;
            let transient = match &result {
                Err(err) => {
                    super::policy::class_of(err, self.source.as_ref()) == wechat::ErrorClass::Retry
                }
                Ok(_) => false,
            };
            let wake = tokio::time::Instant::now() + backoff.next_delay();
            if !transient || wake > deadline || self.cancel.is_cancelled() {
                return result;
            }
            if let Err(err) = &result {
                warn!(error = %Chain(&err), "exchanging an authorization code failed; trying again");
            }
            tokio::select! {
                () = self.cancel.cancelled() => return result,
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn exchange(&self) -> Result<ChildRecord, FetchError> {
        let parent = self.source.parent_token().await?;
        let sent = self.clock.now_ms();
        let grant = match self.source.exchange(&parent, &self.code).await {
            Ok(grant) => grant,
            Err(err) => {
                report_rejection(self.source.as_ref(), &parent, &err).await;
                return Err(err);
            }
        };
        if !self.id.is_empty() && grant.id != self.id {
            warn!(pushed = %self.id, answered = %grant.id, "the code exchange answered for another child than the push named");
        }
        if grant.refresh_token.is_empty() {
            return Err(FetchError::Malformed(
                "the code exchange answered without a refresh token".into(),
            ));
        }
        let now = self.clock.now_ms();
        let record = record_of(grant, ("", ""), sent, now, now / 1000);
        self.store
            .save_children(std::slice::from_ref(&record))
            .await
            .map_err(|err| FetchError::Transport(format!("store: {}", Chain(&err))))?;
        Ok(record)
    }
}

pub(super) struct RecoverTask {
    pub(super) kind: &'static str,
    pub(super) source: Arc<dyn ChildSource>,
    pub(super) store: Arc<dyn ChildStore>,
    pub(super) cancel: CancellationToken,
}

impl RecoverTask {
    pub(super) async fn run(self) -> Outcome {
        if !self.source.can_list() {
            return Outcome::Recovered(Ok(Vec::new()));
        }
        // Recovery waits as long as it takes for the parent's token (the
        // first verify ticket may be minutes away), but not past shutdown.
        let parent = loop {
            match self.source.parent_token().await {
                Ok(token) => break token,
                Err(_) if self.cancel.is_cancelled() => {
                    return Outcome::Recovered(Ok(Vec::new()));
                }
                Err(_) => {
                    tokio::select! {
                        () = self.cancel.cancelled() => return Outcome::Recovered(Ok(Vec::new())),
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        Outcome::Recovered(self.pages(&parent).await)
    }

    async fn pages(&self, parent: &AccessToken) -> Result<Vec<ChildRecord>, FetchError> {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let page = self.source.list(parent, offset).await?;
            let fetched = page.children.len() as u64;
            let records: Vec<ChildRecord> = page
                .children
                .into_iter()
                .filter(|listed| !listed.refresh_token.is_empty())
                .map(|listed| ChildRecord {
                    appid: listed.id,
                    refresh_token: listed.refresh_token,
                    access_token: String::new(),
                    expires_at_ms: 0,
                    fetched_at_ms: 0,
                    authorized_at: listed.authorized_at,
                    name: String::new(),
                })
                .collect();
            // Each page is durable before the next is asked for.
            if let Err(err) = self.store.save_recovered(&records).await {
                error!(error = %Chain(&err), "could not store recovered {} refresh tokens", self.kind);
            }
            all.extend(records);
            offset += fetched;
            info!(
                recovered = all.len(),
                total = page.total,
                "{} list page",
                self.kind
            );
            if fetched == 0 || offset >= page.total {
                break;
            }
        }
        Ok(all)
    }
}

pub(super) struct DescribeTask {
    pub(super) source: Arc<dyn ChildSource>,
    pub(super) id: Box<str>,
    pub(super) refresh_token: Box<str>,
}

impl DescribeTask {
    pub(super) async fn run(self) -> Outcome {
        let result = async {
            let parent = self.source.parent_token().await?;
            let described = self
                .source
                .describe(&parent, &self.id, &self.refresh_token)
                .await;
            if let Err(err) = &described {
                report_rejection(self.source.as_ref(), &parent, err).await;
            }
            described
        }
        .await;
        Outcome::Described {
            id: self.id,
            result,
        }
    }
}
