//! WeCom service providers (DESIGN.md section 19): for each `[[suites]]`
//! entry, a [`SuiteHandle`] owning
//!
//! - the `suite_ticket` WeCom pushes, the newest by `TimeStamp`, kept
//!   durably and shared by a fleet ([`held_ticket`], [`ticket`]);
//! - the `suite_access_token`, an engine credential of the pushed-ticket
//!   shape ([`suite_token`]), and the `provider_access_token` when the
//!   suite sets `provider_secret` ([`provider_token`]);
//! - the installed corps, an instance of the family of credentials under
//!   one parent ([`crate::children`], [`corps`]), their permanent codes
//!   in the suite's store, and their JS-SDK tickets when configured
//!   ([`corp_tickets`]);
//! - the callback URL's checks and pushes ([`callback`], [`event`],
//!   [`route`]), turned into changes here.
//!
//! The suite's durable state (its ticket, every corp's permanent code)
//! goes through the platforms' store stack: memory, a file journal, or
//! the fleet's Redis under one hash tag per suite.

pub mod callback;
pub mod corp_tickets;
pub mod corps;
pub mod event;
pub mod held_ticket;
pub mod metrics;
pub mod provider_token;
pub mod route;
pub mod suite_token;
pub mod ticket;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

use crate::children::scheduler::FetchCounter;
use crate::children::{access, ChildError, ChildToken, Command, Hold, Scheduler, SchedulerParts};
use crate::config::SuiteConfig;
use crate::credential::TicketKind;
use crate::engine::{CredentialHandle, CredentialView, EngineContext};
use crate::platform::authorizers::{AuthorizerStore, SchedulerTuning};
use crate::platform::store::PlatformStore;
use crate::wechat::FetchError;
use corp_tickets::{CorpTickets, CorpTokens};
use held_ticket::HeldTicket;
use metrics::SuiteMetrics;
use upstream::SuiteApi;

pub use callback::{Refusal, SuiteCallback};
pub use event::SuiteEvent;
pub use ticket::{PushedTicket, TicketDecision};

/// How long the callback waits for a push's effect before answering
/// `success` anyway: WeCom wants its answer within a second, and an
/// exchange may take longer (it goes on after the answer).
pub const ANSWER_WITHIN: Duration = Duration::from_millis(800);

/// Corp token fetches a Beijing day, all corps of a suite together (the
/// fleet's, in a shared store): ten thousand corps refreshed every hour
/// and a half, twice when WeCom answers with the held token, take about
/// 300,000.
pub const CORP_DAILY_BUDGET: u32 = 400_000;

/// Why a corp's credential cannot be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CorpError {
    /// No such corp has the suite installed (`corp_not_found`).
    #[error("no such corp has the suite installed")]
    NotFound,
    /// No valid token within the wait, or none soon: `held` says why when
    /// the corp is held (a dead permanent code, 45009, the budget).
    #[error("the corp's token is unavailable (held: {})", held.label())]
    Unavailable { held: Hold },
    /// The suite does not list this ticket kind in `corp_tickets`.
    #[error("the suite's corp_tickets does not list this ticket")]
    TicketNotConfigured,
}

impl From<ChildError> for CorpError {
    fn from(err: ChildError) -> Self {
        match err {
            ChildError::NotFound => CorpError::NotFound,
            ChildError::Unavailable { held } => CorpError::Unavailable { held },
        }
    }
}

/// One suite. Cheap to clone.
#[derive(Clone)]
pub struct SuiteHandle {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<SuiteConfig>,
    callback: SuiteCallback,
    suite_token: CredentialHandle,
    provider_token: Option<CredentialHandle>,
    ticket: Arc<HeldTicket>,
    corps: Arc<crate::children::Table>,
    commands: mpsc::Sender<Command>,
    corp_tickets: CorpTickets,
    api: SuiteApi,
    metrics: SuiteMetrics,
    clock: crate::clock::Clock,
    /// Unix seconds: what the ticket age counts from before any ticket.
    started_at: u64,
    /// Names the suite (`suite`) on every log line of its tasks and of
    /// the pushes it applies.
    span: tracing::Span,
}

impl SuiteHandle {
    /// Starts the suite's credentials on `context.tasks`: its suite and
    /// provider tokens' refreshers, its corps' scheduler, and (in a
    /// shared store) the look for tickets other brokers received.
    pub fn spawn(
        config: SuiteConfig,
        http: reqwest::Client,
        store: Arc<dyn PlatformStore>,
        context: &EngineContext,
        metrics: &SuiteMetrics,
        tuning: SchedulerTuning,
    ) -> SuiteHandle {
        let config = Arc::new(config);
        let api = SuiteApi::new(http.clone(), &config);
        let cell = Arc::new(tokio::sync::watch::channel(None).0);
        // The suite's tasks and the pushes it applies log inside this.
        let span = tracing::info_span!(parent: None, "suite", suite = %config.name);
        let ticket = Arc::new(HeldTicket::new(
            &config.suite_id,
            cell.clone(),
            store.clone(),
            context.clock,
        ));
        context.tasks.spawn(
            ticket
                .clone()
                .follow_store(store.is_shared(), context.cancel.child_token())
                .instrument(span.clone()),
        );
        let source = suite_token::source(http, &config, cell, store.clone(), context.clock);
        let suite_token = CredentialHandle::spawn(
            Arc::new(suite_token::spec(&config)),
            Arc::new(source),
            context,
            CredentialView::default(),
        );
        let provider_token = provider_token::spec(&config)
            .zip(provider_token::ProviderTokenSource::new(
                api.clone(),
                &config,
            ))
            .map(|(spec, source)| {
                CredentialHandle::spawn(
                    Arc::new(spec),
                    Arc::new(source),
                    context,
                    CredentialView::default(),
                )
            });
        metrics.init(&config.name);
        let corps = Arc::new(crate::children::Table::default());
        let (commands, command_rx) = mpsc::channel(4096);
        let scheduler = Scheduler::new(SchedulerParts {
            kind: corps::KIND,
            span: span.clone(),
            refresh_before: config.refresh_before,
            source: Arc::new(corps::CorpSource::new(
                api.clone(),
                suite_token.clone(),
                config.fetch_timeout,
                config.customized,
            )),
            store: Arc::new(AuthorizerStore(store)),
            table: corps.clone(),
            fetches: FetchCounter {
                counter: metrics.corp_fetches.clone(),
                parent: Arc::from(config.name.as_str()),
            },
            clock: context.clock,
            commands: command_rx,
            cancel: context.cancel.child_token(),
            tuning,
            daily_budget: CORP_DAILY_BUDGET,
            budget_key: format!("suites.{}.corps", config.name),
        });
        context.tasks.spawn(scheduler.run());
        let corp_tickets = CorpTickets::new(
            config.clone(),
            api.clone(),
            CorpTokens {
                table: corps.clone(),
                commands: commands.clone(),
                clock: context.clock,
            },
            context.clone(),
        );
        SuiteHandle {
            inner: Arc::new(Inner {
                callback: SuiteCallback::for_suite(&config),
                config,
                suite_token,
                provider_token,
                ticket,
                corps,
                commands,
                corp_tickets,
                api,
                metrics: metrics.clone(),
                clock: context.clock,
                started_at: context.clock.now_secs(),
                span,
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    pub fn config(&self) -> &SuiteConfig {
        &self.inner.config
    }

    /// The `suite_access_token`'s handle.
    pub fn suite_token(&self) -> &CredentialHandle {
        &self.inner.suite_token
    }

    /// The `provider_access_token`'s handle; `None` when the suite sets
    /// no `provider_secret` (`provider_not_configured`).
    pub fn provider_token(&self) -> Option<&CredentialHandle> {
        self.inner.provider_token.as_ref()
    }

    /// The installed corps: `get(corpid)`, `sorted()`, `owner_of(token)`,
    /// `len()`. Slots hold tokens, never permanent codes.
    pub fn corps(&self) -> &Arc<crate::children::Table> {
        &self.inner.corps
    }

    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// The corp's valid token, waiting up to `wait` when it has none yet
    /// (just installed, or being refreshed after expiry).
    pub async fn corp_token(
        &self,
        corpid: &str,
        wait: Duration,
    ) -> Result<Arc<ChildToken>, CorpError> {
        Ok(access::token(&self.inner.corps, self.inner.clock, corpid, wait).await?)
    }

    /// Reports `reported` rejected; answers with the token to use next
    /// and whether it is a new one, waiting up to `wait` for the refresh.
    pub async fn invalidate_corp(
        &self,
        corpid: &str,
        reported: &str,
        wait: Duration,
    ) -> Result<(Arc<ChildToken>, bool), CorpError> {
        let inner = &self.inner;
        Ok(access::invalidate(
            &inner.corps,
            &inner.commands,
            inner.clock,
            corpid,
            reported,
            wait,
        )
        .await?)
    }

    /// The corp's `kind` JS-SDK ticket (started on its first use).
    pub fn corp_ticket(
        &self,
        corpid: &str,
        kind: TicketKind,
    ) -> Result<CredentialHandle, CorpError> {
        if !self.inner.config.corp_tickets.contains(&kind) {
            return Err(CorpError::TicketNotConfigured);
        }
        // A corp's id names its tickets' records.
        if !upstream::is_corpid(corpid) || self.inner.corps.get(corpid).is_none() {
            return Err(CorpError::NotFound);
        }
        Ok(self.inner.corp_tickets.get(corpid, kind))
    }

    /// A fresh pre-auth code and its lifetime (`get_pre_auth_code`),
    /// never cached.
    pub async fn pre_auth_code(&self, wait: Duration) -> Result<(String, u64), FetchError> {
        let token = self
            .inner
            .suite_token
            .token(wait)
            .await
            .map_err(|err| FetchError::Parent(format!("suite token: {err}")))?;
        let answer = self.inner.api.pre_auth_code(&token.value).await;
        if let Err(err) = &answer {
            if upstream::rejects_suite_token(err) {
                let _ = self
                    .inner
                    .suite_token
                    .report_rejected(token.value.expose(), Duration::from_secs(1))
                    .await;
            }
        }
        answer
    }

    /// The corp's name as WeCom last told it.
    pub fn corp_name(&self, corpid: &str) -> Option<String> {
        let name = self.inner.corps.get(corpid)?.name()?;
        Some(name.to_string())
    }

    /// When the corp installed the suite (Unix seconds).
    pub fn installed_at(&self, corpid: &str) -> Option<u64> {
        Some(self.inner.corps.get(corpid)?.authorized_at())
    }

    /// The `TimeStamp` of the newest `suite_ticket` known (Unix seconds).
    pub fn ticket_timestamp(&self) -> Option<u64> {
        self.inner.ticket.newest_timestamp()
    }

    /// WeCom's URL check (`GET` with `echostr`): the plaintext to answer.
    pub fn verify_url(&self, query: Option<&str>) -> Result<String, Refusal> {
        let result = self
            .inner
            .callback
            .verify_url(query, self.inner.clock.now_secs());
        self.count(result.as_ref().err().copied());
        result
    }

    /// Checks and decrypts one push, then applies it: the ticket judged
    /// and stored, an install or a reset exchanged, a change re-read, a
    /// removal dropped. Waits at most [`ANSWER_WITHIN`] for the effect
    /// (it goes on after that); every refusal leaves the suite as it was.
    pub async fn accept_push(&self, query: Option<&str>, body: &[u8]) -> Result<(), Refusal> {
        let opened = self
            .inner
            .callback
            .open_push(query, body, self.inner.clock.now_secs());
        self.count(opened.as_ref().err().copied());
        let event = opened?;
        let suite = self.clone();
        let applying = tokio::spawn(
            async move { suite.apply(event).await }.instrument(self.inner.span.clone()),
        );
        let _ = tokio::time::timeout(ANSWER_WITHIN, applying).await;
        Ok(())
    }

    /// Counts a call on the callback URL: accepted, or refused by `refusal`.
    pub fn count(&self, refusal: Option<Refusal>) {
        let outcome = refusal.map_or("accepted", Refusal::label);
        self.inner
            .metrics
            .callbacks
            .with_label_values(&[self.name(), outcome])
            .inc();
        if let Some(refusal) = refusal {
            self.inner.span.in_scope(|| {
                warn!(reason = %refusal, "refused a call on the suite's callback URL");
            });
        }
    }

    async fn apply(&self, event: SuiteEvent) {
        match event {
            SuiteEvent::SuiteTicket { ticket, timestamp } => {
                let decision = self
                    .inner
                    .ticket
                    .push(PushedTicket { ticket, timestamp })
                    .await;
                if !decision.keeps_pushed() && decision != TicketDecision::Same {
                    info!(
                        timestamp,
                        decision = decision.label(),
                        "kept the held suite_ticket over a pushed one"
                    );
                }
            }
            SuiteEvent::CreateAuth { auth_code } | SuiteEvent::ResetPermanentCode { auth_code } => {
                info!("install pushed; exchanging its auth code");
                self.send(Command::Authorized {
                    id: String::new(),
                    code: auth_code.expose().to_owned(),
                })
                .await;
            }
            SuiteEvent::ChangeAuth { auth_corpid } => {
                self.send(Command::Describe { id: auth_corpid }).await;
            }
            SuiteEvent::CancelAuth { auth_corpid } => {
                self.inner.corp_tickets.forget(&auth_corpid);
                self.send(Command::Unauthorized { id: auth_corpid }).await;
            }
            SuiteEvent::Other { info_type } => {
                debug!(info_type, "ignoring a push of another kind");
            }
        }
    }

    async fn send(&self, command: Command) {
        if self.inner.commands.send(command).await.is_err() {
            warn!("the corp scheduler has stopped; push dropped");
        }
    }

    /// Seconds since WeCom issued the newest `suite_ticket` known (since
    /// the suite started, before the first), at `now_secs`: the ticket
    /// age gauge.
    pub fn ticket_age_secs(&self, now_secs: u64) -> u64 {
        let issued = self.ticket_timestamp().unwrap_or(self.inner.started_at);
        now_secs.saturating_sub(issued)
    }
}
