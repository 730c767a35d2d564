//! WeChat Open Platform (DESIGN.md section 13): for each `[[platforms]]`
//! entry, a [`PlatformHandle`] owning
//!
//! - the component token, an engine credential (one refresher, like an
//!   app's access token) fetched with the latest verify ticket
//!   ([`component`]);
//! - the authorizers, an instance of the family of credentials under one
//!   parent ([`crate::children`]): a compact table with one scheduler
//!   task ([`authorizers`]);
//! - the pushes WeChat sends to the callback listener, checked and
//!   decrypted ([`crypto`], [`message`]) and turned into changes here;
//! - the durable state: the verify ticket and every refresh token
//!   ([`store`]).

pub mod authorizers;
pub mod callback;
pub mod component;
pub mod crypto;
pub mod message;
pub mod metrics;
pub mod redis_store;
pub mod store;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

use crate::children::scheduler::FetchCounter;
use crate::children::{Hold, Scheduler, SchedulerParts};
use crate::config::PlatformConfig;
use crate::engine::{CredentialHandle, CredentialView, EngineContext};
use crate::errors::Chain;
use crate::wechat::FetchError;
use authorizers::{
    AuthorizerSource, AuthorizerStore, AuthorizerToken, Command, SchedulerTuning, Table,
};
use component::TicketCell;
use crypto::MessageCrypt;
use metrics::PlatformMetrics;
use store::{PlatformStore, StoredTicket};
use upstream::ComponentApi;

/// A push more than this far from the broker's clock is refused: a
/// replayed push is as good as a forged one.
pub const TIMESTAMP_WINDOW_SECS: u64 = 300;

/// Why a push was refused (a 403, and nothing changes). The label is the
/// metric's `outcome`; no variant carries the push's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("missing or malformed query parameters")]
    Query,
    #[error("timestamp outside the accepted window")]
    Stale,
    #[error("the body is not a push envelope")]
    Envelope,
    #[error(transparent)]
    Crypt(#[from] crypto::CryptError),
    #[error("the decrypted message is not a push")]
    Message,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Query => "query",
            Refusal::Stale => "stale",
            Refusal::Envelope => "envelope",
            Refusal::Crypt(err) => err.label(),
            Refusal::Message => "message",
        }
    }
}

/// Why an authorizer's token cannot be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizerError {
    NotFound,
    Unavailable,
}

/// One platform. Cheap to clone.
#[derive(Clone)]
pub struct PlatformHandle {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<PlatformConfig>,
    component: CredentialHandle,
    crypt: MessageCrypt,
    ticket: Arc<TicketCell>,
    table: Arc<Table>,
    commands: mpsc::Sender<Command>,
    api: ComponentApi,
    store: Arc<dyn PlatformStore>,
    metrics: PlatformMetrics,
    clock: crate::clock::Clock,
    /// Names the platform (`platform`) on every log line of its
    /// scheduler and of the pushes it applies.
    span: tracing::Span,
}

impl PlatformHandle {
    /// Starts the platform's component refresher and authorizer scheduler
    /// on `context.tasks`.
    pub fn spawn(
        config: PlatformConfig,
        http: reqwest::Client,
        store: Arc<dyn PlatformStore>,
        context: &EngineContext,
        metrics: &PlatformMetrics,
        tuning: SchedulerTuning,
    ) -> PlatformHandle {
        let config = Arc::new(config);
        let api = ComponentApi::new(http.clone(), &config);
        let ticket: Arc<TicketCell> = Arc::new(tokio::sync::watch::channel(None).0);
        let source = Arc::new(component::source(
            http.clone(),
            &config,
            ticket.clone(),
            store.clone(),
            context.clock,
        ));
        let component = CredentialHandle::spawn(
            Arc::new(component::spec(&config)),
            source,
            context,
            CredentialView::default(),
        );
        metrics.init(&config.name);
        let table = Arc::new(Table::default());
        let (commands, command_rx) = mpsc::channel(4096);
        // The scheduler and the pushes the platform applies log inside this.
        let span = tracing::info_span!(parent: None, "platform", platform = %config.name);
        let scheduler = Scheduler::new(SchedulerParts {
            kind: authorizers::KIND,
            span: span.clone(),
            refresh_before: config.refresh_before,
            source: Arc::new(AuthorizerSource::new(
                api.clone(),
                component.clone(),
                config.fetch_timeout,
            )),
            store: Arc::new(AuthorizerStore(store.clone())),
            table: table.clone(),
            fetches: FetchCounter {
                counter: metrics.authorizer_fetches.clone(),
                parent: Arc::from(config.name.as_str()),
            },
            clock: context.clock,
            commands: command_rx,
            cancel: context.cancel.child_token(),
            tuning,
            daily_budget: config.authorizer_daily_budget,
            budget_key: format!("platforms.{}.authorizer_daily_budget", config.name),
        });
        context.tasks.spawn(scheduler.run());
        let crypt = MessageCrypt::new(
            config.token.clone(),
            config.aes_key.expose(),
            &config.component_appid,
        )
        .expect("validated: a 43-character EncodingAESKey");
        PlatformHandle {
            inner: Arc::new(Inner {
                config,
                component,
                crypt,
                ticket,
                table,
                commands,
                api,
                store,
                metrics: metrics.clone(),
                clock: context.clock,
                span,
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    pub fn config(&self) -> &PlatformConfig {
        &self.inner.config
    }

    /// The component token's handle.
    pub fn component(&self) -> &CredentialHandle {
        &self.inner.component
    }

    pub fn authorizers(&self) -> &Table {
        &self.inner.table
    }

    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// Counts a push refused before it could be read (too large).
    pub fn count_refusal(&self, outcome: &str) {
        self.inner
            .metrics
            .callbacks
            .with_label_values(&[self.name(), outcome])
            .inc();
    }

    /// Checks, decrypts and applies one push. Every refusal leaves the
    /// platform as it was.
    pub async fn accept_push(&self, query: Option<&str>, body: &[u8]) -> Result<(), Refusal> {
        self.accept(query, body)
            .instrument(self.inner.span.clone())
            .await
    }

    async fn accept(&self, query: Option<&str>, body: &[u8]) -> Result<(), Refusal> {
        let result = self.check_and_apply(query, body).await;
        let outcome = match &result {
            Ok(()) => "accepted",
            Err(refusal) => refusal.label(),
        };
        self.inner
            .metrics
            .callbacks
            .with_label_values(&[self.name(), outcome])
            .inc();
        if let Err(refusal) = &result {
            warn!(reason = %refusal, "refused a callback push");
        }
        result
    }

    async fn check_and_apply(&self, query: Option<&str>, body: &[u8]) -> Result<(), Refusal> {
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let param = |name: &str| {
            params
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        let (Some(timestamp), Some(nonce), Some(signature)) =
            (param("timestamp"), param("nonce"), param("msg_signature"))
        else {
            return Err(Refusal::Query);
        };
        if param("encrypt_type").is_some_and(|kind| kind != "aes") {
            return Err(Refusal::Query);
        }
        let sent: u64 = timestamp.parse().map_err(|_| Refusal::Query)?;
        if sent.abs_diff(self.inner.clock.now_secs()) > TIMESTAMP_WINDOW_SECS {
            return Err(Refusal::Stale);
        }
        let envelope = message::parse(body).map_err(|_| Refusal::Envelope)?;
        let encrypt = envelope.get("Encrypt").ok_or(Refusal::Envelope)?;
        if !self
            .inner
            .crypt
            .verify(timestamp, nonce, encrypt, signature)
        {
            return Err(crypto::CryptError::Signature.into());
        }
        let plain = self.inner.crypt.decrypt(encrypt)?;
        let event = message::parse(&plain).map_err(|_| Refusal::Message)?;
        if event
            .get("AppId")
            .is_some_and(|appid| appid != self.inner.config.component_appid)
        {
            return Err(crypto::CryptError::AppId.into());
        }
        self.apply(&event).await
    }

    async fn apply(&self, event: &message::Fields) -> Result<(), Refusal> {
        let field = |name: &str| event.get(name).filter(|value| !value.is_empty());
        match event.get("InfoType").unwrap_or_default() {
            "component_verify_ticket" => {
                let ticket = field("ComponentVerifyTicket").ok_or(Refusal::Message)?;
                self.keep_ticket(ticket).await;
            }
            "authorized" | "updateauthorized" => {
                let appid = field("AuthorizerAppid").ok_or(Refusal::Message)?;
                let code = field("AuthorizationCode").ok_or(Refusal::Message)?;
                info!(authorizer = appid, "authorization pushed");
                self.send(Command::Authorized {
                    id: appid.to_owned(),
                    code: code.to_owned(),
                })
                .await;
            }
            "unauthorized" => {
                let appid = field("AuthorizerAppid").ok_or(Refusal::Message)?;
                self.send(Command::Unauthorized {
                    id: appid.to_owned(),
                })
                .await;
            }
            other => {
                debug!(info_type = other, "ignoring a push of another kind");
            }
        }
        Ok(())
    }

    /// Keeps the latest ticket, durably first: a restart must not lose it.
    async fn keep_ticket(&self, ticket: &str) {
        let stored = StoredTicket {
            component_appid: self.inner.config.component_appid.clone(),
            ticket: ticket.to_owned(),
            received_at: self.inner.clock.now_secs(),
        };
        if let Err(err) = self.inner.store.save_ticket(&stored).await {
            warn!(error = %Chain(&err), "could not store the component_verify_ticket; keeping it in memory");
        }
        self.inner.ticket.send_replace(Some(Arc::from(ticket)));
        debug!("component_verify_ticket received");
    }

    async fn send(&self, command: Command) {
        if self.inner.commands.send(command).await.is_err() {
            warn!("the authorizer scheduler has stopped; push dropped");
        }
    }

    /// The authorizer's valid token, waiting up to `wait` when it has
    /// none yet (just authorized, or being refreshed after expiry); at
    /// once unavailable when it has none and is held.
    pub async fn authorizer_token(
        &self,
        appid: &str,
        wait: Duration,
    ) -> Result<Arc<AuthorizerToken>, AuthorizerError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.inner.table.changed.notified();
            let slot = self.inner.table.get(appid);
            if slot.is_none() && self.inner.table.is_loaded() {
                return Err(AuthorizerError::NotFound);
            }
            let held = slot.as_ref().is_some_and(|slot| slot.hold() != Hold::None);
            let token = slot.and_then(|slot| slot.token());
            if let Some(token) = token.filter(|t| t.is_valid(self.now_ms())) {
                return Ok(token);
            }
            // Held (a configuration errcode, 45009, the budget spent):
            // waiting cannot bring a token soon, so the answer is now.
            if held {
                return Err(AuthorizerError::Unavailable);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(AuthorizerError::Unavailable);
            }
        }
    }

    /// Reports `reported` rejected; answers with the token to use next
    /// and whether it is a new one, waiting up to `wait` for the refresh.
    pub async fn invalidate_authorizer(
        &self,
        appid: &str,
        reported: &str,
        wait: Duration,
    ) -> Result<(Arc<AuthorizerToken>, bool), AuthorizerError> {
        self.inner
            .table
            .get(appid)
            .ok_or(AuthorizerError::NotFound)?;
        let (reply, scheduled) = tokio::sync::oneshot::channel();
        self.send(Command::Invalidate {
            id: appid.to_owned(),
            reported: reported.to_owned(),
            reply,
        })
        .await;
        // No refresh (another token is current, or this one is too young
        // to replace): the current token, at once, not refreshed.
        let scheduled = scheduled.await.unwrap_or(false);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.inner.table.changed.notified();
            let slot = self
                .inner
                .table
                .get(appid)
                .ok_or(AuthorizerError::NotFound)?;
            let token = slot.token().filter(|t| t.is_valid(self.now_ms()));
            let replaced = token.as_ref().filter(|t| t.value.expose() != reported);
            match (scheduled, replaced) {
                (true, Some(token)) => return Ok((token.clone(), true)),
                (false, _) => {
                    return token
                        .map(|t| (t, false))
                        .ok_or(AuthorizerError::Unavailable)
                }
                (true, None) => {}
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return token
                    .map(|t| (t, false))
                    .ok_or(AuthorizerError::Unavailable);
            }
        }
    }

    /// A fresh pre-auth code (`api_create_preauthcode`), for building the
    /// authorization link.
    pub async fn pre_auth_code(&self, wait: Duration) -> Result<(String, u64), FetchError> {
        let token = self
            .inner
            .component
            .token(wait)
            .await
            .map_err(|err| FetchError::Parent(err.to_string()))?;
        self.inner.api.pre_auth_code(token.value.expose()).await
    }
}
