//! The follower: the writer of a credential that another broker, the
//! leader, owns (`[[apps]] follow`, DESIGN.md section 15). It takes the
//! refresher's place in the engine — the same [`CredentialHandle`], the
//! same publish into the view and the lock-free cell, the same command
//! channel — but never calls WeChat. It watches the leader's remote
//! listener (a long poll that answers as soon as the leader's credential
//! changes), forwards invalidations there (the leader decides), and keeps
//! its held credential while the leader cannot be reached: readers see
//! no difference until that credential expires.
//!
//! What the leader sends is checked before anything is served: the
//! status (a redirect is never followed), the JSON shape, the app, appid,
//! grant and credential it names, a plausible value and lifetime. A
//! failed check is logged with its cause and changes nothing.
//!
//! The watch is paced ([`pace`]): a same-value answer is
//! not a change, watches start at least a second apart and further apart
//! while the leader answers at once with nothing new, and answers that
//! flip between two values are an anomaly, logged once per episode and
//! counted in `wxbroker_follower_flips_total`, never saved or logged one
//! by one.
//!
//! With a store of this broker's own (memory or file, not a shared Redis,
//! whose fleet would take the record for its own), the adopted credential
//! is saved like a fetched one, so a follower restarted while its leader
//! is down still serves it until it expires.
//!
//! This file owns the follower's task and what it does with an answer;
//! the protocol spoken with the leader is [`leader`]'s, the answer and
//! its check are [`answer`]'s.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, instrument, warn};

mod answer;
mod leader;
mod pace;

pub(super) use self::leader::Leader;

use self::answer::Refused;
use self::leader::watch;
use self::pace::{FlipWatch, Seen, WatchPace};
use super::handle::WriterCommand;
use super::{
    CredentialHandle, CredentialRecord, CredentialSpec, CredentialView, EngineContext,
    InvalidateOutcome, LastError, LeaderState, Writer,
};
use crate::credential::Credential;
use crate::errors::Chain;
use crate::metrics::AppSeries;
use crate::secret::AccessToken;

/// Waits between attempts while the leader fails: short, since a
/// follower costs the leader one cheap request, and a change should
/// reach the follower soon after the leader is back.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(10);

pub(super) struct Follower {
    spec: Arc<CredentialSpec>,
    credential: Credential,
    leader: Arc<Leader>,
    /// Publishes, warm-starts and saves, as a refresher's does.
    writer: Writer,
    commands: mpsc::Receiver<WriterCommand>,
    cancel: CancellationToken,
    /// The last cause logged, so a leader down for an hour logs once.
    last_logged: Option<Refused>,
    /// Whether adopted credentials are kept across restarts: not in a
    /// shared store, whose fleet would take the record for its own.
    keeps: bool,
    /// The counted series of the credential's `app` label.
    series: Arc<AppSeries>,
    /// What the last answers were, to tell a flip from a change.
    flips: FlipWatch,
}

impl Follower {
    pub(super) fn new(
        leader: Arc<Leader>,
        handle: CredentialHandle,
        commands: mpsc::Receiver<WriterCommand>,
        context: &EngineContext,
    ) -> Follower {
        let series = context.metrics.app(&handle.spec().name);
        Follower {
            keeps: context.store.cluster().is_none(),
            spec: handle.spec().clone(),
            credential: handle.credential(),
            cancel: handle.stopped().clone(),
            leader,
            writer: Writer::new(handle, context),
            commands,
            last_logged: None,
            series,
            flips: FlipWatch::default(),
        }
    }

    /// The leader-side path of this credential, or why it has none.
    fn path(&self) -> Result<String, Refused> {
        self.credential
            .leader_path(&self.spec.name)
            .ok_or_else(|| Refused(format!("a {} is never followed", self.credential)))
    }

    /// Runs until the app stops. Unlike an upstream fetch, a watch
    /// abandoned by a stop costs nothing: the leader still holds it all.
    /// It runs inside a span naming the credential (`app`, `credential`),
    /// which its log lines carry.
    #[instrument(
        name = "follower",
        parent = None,
        skip_all,
        fields(app = %self.spec.name, credential = %self.credential)
    )]
    pub(super) async fn run(mut self) {
        self.publish(|view| view.leader = Some(LeaderState { reachable: false }));
        self.warm_start().await;
        let mut retry = FIRST_RETRY;
        let mut pace = WatchPace::default();
        let mut next_watch = Instant::now();
        while !self.cancel.is_cancelled() {
            let started = next_watch.max(Instant::now());
            let watch = watch(
                self.leader.clone(),
                self.path(),
                self.held_version(),
                next_watch,
            );
            tokio::select! {
                () = self.cancel.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(WriterCommand::Invalidate { reported, reply, .. }) => {
                        let outcome = self.forward_invalidation(&reported).await;
                        let _ = reply.send(outcome);
                    }
                    // A follower is never held for 45009: its leader is.
                    Some(WriterCommand::ClearQuotaHold) => {}
                    None => break,
                },
                answer = watch => match self.check(answer) {
                    Ok(record) => {
                        let seen = self.adopt(record).await;
                        retry = FIRST_RETRY;
                        next_watch = pace.next(started, Instant::now(), seen);
                    }
                    Err(refused) => {
                        self.failed(refused);
                        next_watch = Instant::now() + retry;
                        retry = (retry * 2).min(MAX_RETRY);
                    }
                },
            }
        }
    }

    /// The version of the credential held, expired or not, for the
    /// watch: the leader answers once it holds another. (Asking "from
    /// nothing" for an expired one would be answered at once with the
    /// same value, again and again, until the leader's expired too.)
    fn held_version(&self) -> Option<String> {
        let view = self.writer.handle().shared.view.borrow();
        Some(view.token.as_ref()?.version())
    }

    /// Sends `reported` to the leader, which refreshes only if it is
    /// still its current credential; adopts what the leader answers.
    async fn forward_invalidation(&mut self, reported: &AccessToken) -> InvalidateOutcome {
        let field = self.credential.answer_field();
        let answer = self.leader.invalidate(self.path(), field, reported).await;
        let outcome = answer.as_ref().ok().and_then(|a| a.outcome.clone());
        match self.check(answer) {
            Ok(record) => {
                info!(token = %reported.fingerprint(), outcome = ?outcome, "invalidation forwarded to the leader");
                let rotated = record.value != *reported;
                self.adopt(record).await;
                match outcome.as_deref() {
                    Some("refreshed") => InvalidateOutcome::Refreshed,
                    Some("rate_limited") => InvalidateOutcome::RateLimited,
                    Some("deferred") => InvalidateOutcome::Deferred,
                    Some("unchanged") => InvalidateOutcome::Unchanged,
                    Some("failed") => InvalidateOutcome::Failed,
                    _ if rotated => InvalidateOutcome::AlreadyRotated,
                    _ => InvalidateOutcome::Pending,
                }
            }
            Err(refused) => {
                self.failed(refused);
                InvalidateOutcome::Failed
            }
        }
    }

    /// The stored credential, when nothing valid is held yet (a reload
    /// carries the running one over): a restart while the leader is down
    /// keeps serving. Only a record for this appid and grant, plausible
    /// and valid, is taken.
    async fn warm_start(&mut self) {
        if !self.keeps || self.writer.valid().is_some() {
            return;
        }
        let Some((_, Some(token))) = self.writer.warm_start().await else {
            return;
        };
        let now = self.writer.handle().now_ms();
        info!(token = %token.value.fingerprint(), expires_in = token.expires_in(now), "loaded the stored credential of the leader");
        self.publish(|view| view.install(Arc::new(token)));
    }

    /// Keeps the credential held for a restart. A failure is logged and
    /// costs only that: the leader still holds the credential.
    async fn save(&self) {
        if !self.keeps {
            return;
        }
        let today = crate::clock::beijing_day(self.writer.handle().now_secs());
        // Nothing is ever fetched here.
        if let Err(err) = self.writer.save(today, 0).await {
            warn!(error = %Chain(&err), "could not store the leader's credential");
        }
    }

    /// Serves `record` from now on, unless it is the one already held;
    /// returns what it was. Only a change is logged and saved: a flip back
    /// to the value held before is served, counted, and logged once per
    /// episode.
    async fn adopt(&mut self, record: CredentialRecord) -> Seen {
        if self.last_logged.take().is_some() {
            info!("the leader answers again");
        }
        let held = self.writer.current();
        let seen = self.flips.classify(
            held.as_deref().map(CredentialRecord::version).as_deref(),
            &record.version(),
            Instant::now(),
        );
        let same = seen == Seen::Same;
        match seen {
            Seen::Same => {}
            Seen::New => {
                info!(token = %record.value.fingerprint(), expires_in = record.expires_in(record.fetched_at_ms), "adopted the leader's credential");
            }
            Seen::Flip { new_episode } => self.count_flip(&record, new_episode),
        }
        self.publish(|view| {
            if !same {
                view.install(Arc::new(record));
            }
            view.clear_failure();
            view.leader = Some(LeaderState { reachable: true });
        });
        if seen == Seen::New {
            self.save().await;
        }
        seen
    }

    /// The leader went back to the value it answered before the current
    /// one: more than one broker answers at its address, each with its
    /// own token (no shared store), and each fetch kills the other's.
    fn count_flip(&self, record: &CredentialRecord, new_episode: bool) {
        self.series.count_flip(self.credential.label());
        if new_episode {
            error!(
                appid = %self.spec.key.appid,
                leader = %self.leader.url(),
                token = %record.value.fingerprint(),
                "the leader's answers flip between two values: more than one broker answers at the leader's address without a shared store, and their fetches invalidate each other's; serving the latest answer, not saving or logging each flip (counted in wxbroker_follower_flips_total)"
            );
        } else {
            debug!("the leader's answer flipped again");
        }
    }

    /// Keeps the held credential; records and logs why nothing came.
    fn failed(&mut self, refused: Refused) {
        if self.last_logged.as_ref() != Some(&refused) {
            warn!(leader = %self.leader.url(), cause = %refused.0, "nothing adopted from the leader; serving the held credential while it lasts");
        } else {
            debug!(cause = %refused.0, "the leader still fails");
        }
        let at = self.writer.handle().now_secs();
        let errmsg = format!("leader: {}", refused.0);
        self.last_logged = Some(refused);
        self.publish(|view| {
            view.last_error = Some(LastError {
                errcode: None,
                errmsg,
                at,
            });
            view.leader = Some(LeaderState { reachable: false });
        });
    }

    fn publish(&self, change: impl FnOnce(&mut CredentialView)) {
        self.writer.publish(change);
    }
}
