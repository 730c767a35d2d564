//! A corp's JS-SDK tickets (`corp_tickets = ["jsapi", "agent_config"]`):
//! engine credentials like an app's tickets (DESIGN.md section 11),
//! fetched with the corp's token. Each is started on its first use, not
//! for every installed corp: of thousands of corps few use the JS-SDK
//! through the broker. Their metrics carry the suite's name, so their
//! series stay per suite whatever the number of corps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tracing::warn;

use super::upstream::SuiteApi;
use crate::children::{access, Command, Table};
use crate::config::SuiteConfig;
use crate::credential::{Credential, TicketKind};
use crate::engine::{CredentialHandle, CredentialSpec, CredentialView, EngineContext, Reissue};
use crate::secret::{fingerprint, AccessToken};
use crate::store::StoreKey;
use crate::wechat::{self, FetchError, TokenGrant, TokenSource};

/// A corp ticket's spec: its own record per corp, its series the suite's.
pub fn spec(config: &SuiteConfig, corpid: &str, kind: TicketKind) -> CredentialSpec {
    let credential = Credential::Ticket(kind);
    let label = credential.label();
    CredentialSpec {
        name: config.name.clone(),
        credential,
        grant: Credential::CorpAccessToken.label(),
        key: StoreKey {
            name: format!("{}.{corpid}.{label}", config.name),
            appid: corpid.to_owned(),
            grant: label,
            // A corp's tickets differ by the app they are fetched for:
            // this suite's (or, for 代开发, the app whose secret is the
            // permanent code).
            cluster_grant: format!("{label}-suite-{}", fingerprint(&config.suite_id)),
        },
        refresh_before: config.refresh_before,
        min_forced_interval: super::suite_token::MIN_FORCED_INTERVAL,
        fetch_timeout: config.fetch_timeout,
        daily_budget: config.daily_budget,
        budget_key: format!("corp_tickets.{kind}"),
        reissue: Reissue::UntilExpiry,
        fight_window: None,
    }
}

/// The corp's token, as the suite's table holds it.
#[derive(Clone)]
pub struct CorpTokens {
    pub table: Arc<Table>,
    pub commands: mpsc::Sender<Command>,
    pub clock: crate::clock::Clock,
}

/// Fetches one corp's ticket of one kind with the corp's token. A token
/// rejection reports the token to the suite's scheduler and asks once
/// more with the next one.
struct CorpTicketSource {
    api: SuiteApi,
    tokens: CorpTokens,
    corpid: String,
    kind: TicketKind,
    wait: Duration,
}

impl CorpTicketSource {
    async fn token(&self) -> Result<AccessToken, FetchError> {
        access::token(
            &self.tokens.table,
            self.tokens.clock,
            &self.corpid,
            self.wait,
        )
        .await
        .map(|token| token.value.clone())
        .map_err(|err| FetchError::Parent(format!("corp token: {err:?}")))
    }

    async fn fetch_with_retry(&self) -> Result<TokenGrant, FetchError> {
        let token = self.token().await?;
        match self.api.corp_ticket(&token, self.kind).await {
            Err(FetchError::Api { errcode, .. }) if wechat::is_token_rejected(errcode) => {
                warn!(corp = %self.corpid, errcode, token = %token.fingerprint(), "corp ticket fetch rejected the corp's token; reporting it and asking once more");
                let tokens = &self.tokens;
                let (next, _) = access::invalidate(
                    &tokens.table,
                    &tokens.commands,
                    tokens.clock,
                    &self.corpid,
                    token.expose(),
                    self.wait,
                )
                .await
                .map_err(|err| FetchError::Parent(format!("corp token: {err:?}")))?;
                self.api.corp_ticket(&next.value, self.kind).await
            }
            other => other,
        }
    }
}

impl TokenSource for CorpTicketSource {
    fn fetch(&self, _force_refresh: bool) -> BoxFuture<'_, Result<TokenGrant, FetchError>> {
        Box::pin(self.fetch_with_retry())
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), FetchError>> {
        Box::pin(async { self.token().await.map(drop) })
    }
}

/// The corp tickets started so far, by corp and kind.
pub struct CorpTickets {
    config: Arc<SuiteConfig>,
    api: SuiteApi,
    tokens: CorpTokens,
    context: EngineContext,
    started: Mutex<HashMap<(Box<str>, TicketKind), CredentialHandle>>,
}

impl CorpTickets {
    pub fn new(
        config: Arc<SuiteConfig>,
        api: SuiteApi,
        tokens: CorpTokens,
        context: EngineContext,
    ) -> Self {
        CorpTickets {
            config,
            api,
            tokens,
            context,
            started: Mutex::default(),
        }
    }

    /// The corp's `kind` ticket, started now if it is not yet.
    pub fn get(&self, corpid: &str, kind: TicketKind) -> CredentialHandle {
        let mut started = self.started.lock().expect("poisoned");
        if let Some(handle) = started.get(&(corpid.into(), kind)) {
            return handle.clone();
        }
        let source = Arc::new(CorpTicketSource {
            api: self.api.clone(),
            tokens: self.tokens.clone(),
            corpid: corpid.to_owned(),
            kind,
            wait: self.config.fetch_timeout,
        });
        let handle = CredentialHandle::spawn(
            Arc::new(spec(&self.config, corpid, kind)),
            source,
            &self.context,
            CredentialView::default(),
        );
        started.insert((corpid.into(), kind), handle.clone());
        handle
    }

    /// Stops the tickets of a corp that removed the app.
    pub fn forget(&self, corpid: &str) {
        self.started
            .lock()
            .expect("poisoned")
            .retain(|(corp, _), handle| {
                let keep = &**corp != corpid;
                if !keep {
                    handle.stopped().cancel();
                }
                keep
            });
    }
}
