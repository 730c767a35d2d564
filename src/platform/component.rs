//! The component token as an engine credential: a [`TokenSource`] that
//! fetches `api_component_token` with the latest verify ticket. The
//! refresher engine owns everything else (single flight, proactive
//! refresh, budget, storage, the fleet's lock), as for an access token.
//!
//! Without a ticket the source makes no call and spends nothing: it asks
//! WeChat to push one (`api_start_push_ticket`, at most once per 10
//! minutes) and waits a while for the push to arrive.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::store::PlatformStore;
use super::upstream::ComponentApi;
use crate::broker::{CredentialSpec, Reissue};
use crate::config::PlatformConfig;
use crate::credential::Credential;
use crate::store::StoreKey;
use crate::wechat::{FetchError, TokenGrant, TokenSource};

/// WeChat pushes a ticket every 10 minutes anyway; asking more often
/// than that only burns the call.
pub const PUSH_REQUEST_INTERVAL: Duration = Duration::from_secs(600);
/// A verify ticket is valid 12 hours after its push.
pub const TICKET_LIFETIME_SECS: u64 = 12 * 3600;
/// 61005: the verify ticket expired; 61006: it is invalid.
const TICKET_REJECTED: [i64; 2] = [61005, 61006];

/// The component token's spec, from its platform's own settings.
pub fn spec(config: &PlatformConfig) -> CredentialSpec {
    let credential = Credential::ComponentToken;
    CredentialSpec {
        name: config.name.clone(),
        credential,
        grant: credential.label(),
        key: StoreKey::of_platform(&config.name, &config.component_appid, credential),
        refresh_before: config.refresh_before,
        min_forced_interval: config.min_forced_interval,
        fetch_timeout: config.fetch_timeout,
        daily_budget: config.daily_budget,
        budget_key: "daily_budget".to_owned(),
        reissue: Reissue::Fresh,
        fight_window: None,
    }
}

/// The latest verify ticket, as this broker knows it: `None` when there
/// is none, or WeChat refused the one there was.
pub type TicketCell = watch::Sender<Option<Arc<str>>>;

pub struct ComponentSource {
    api: ComponentApi,
    name: String,
    ticket: Arc<TicketCell>,
    store: Arc<dyn PlatformStore>,
    last_push_request: Mutex<Option<Instant>>,
    /// The last ticket WeChat refused, or one stored with implausible
    /// times: never read back from the store.
    rejected: Mutex<Option<Arc<str>>>,
    /// How long one attempt waits for a pushed ticket.
    wait: Duration,
    clock: crate::clock::Clock,
}

impl ComponentSource {
    pub fn new(
        api: ComponentApi,
        name: &str,
        ticket: Arc<TicketCell>,
        store: Arc<dyn PlatformStore>,
        wait: Duration,
        clock: crate::clock::Clock,
    ) -> Self {
        ComponentSource {
            api,
            name: name.to_owned(),
            ticket,
            store,
            last_push_request: Mutex::new(None),
            rejected: Mutex::new(None),
            wait,
            clock,
        }
    }

    /// The ticket to fetch with: the cell's, else the store's (another
    /// broker of the fleet may have received the push), if still valid.
    async fn current_ticket(&self) -> Option<Arc<str>> {
        if let Some(ticket) = self.ticket.borrow().clone() {
            return Some(ticket);
        }
        let stored = match self.store.load_ticket().await {
            Ok(stored) => stored?,
            // Refused state was logged and set aside by the store.
            Err(err) if err.is_untrusted() => return None,
            Err(err) => {
                warn!(platform = %self.name, error = %err, "cannot read the stored component_verify_ticket");
                return None;
            }
        };
        let now = self.clock.now_secs();
        let refused = self.rejected.lock().expect("poisoned").as_deref() == Some(&*stored.ticket);
        if refused {
            return None;
        }
        if let Some(problem) = stored.implausible(now) {
            // Dated ahead, it would never age out. Remembered as refused,
            // so it is refused (and logged) once.
            error!(platform = %self.name, %problem, "refusing a stored component_verify_ticket no broker could have received; asking for a new push");
            *self.rejected.lock().expect("poisoned") = Some(Arc::from(stored.ticket));
            return None;
        }
        if now.saturating_sub(stored.received_at) >= TICKET_LIFETIME_SECS {
            return None;
        }
        let ticket: Arc<str> = Arc::from(stored.ticket);
        self.ticket.send_replace(Some(ticket.clone()));
        Some(ticket)
    }

    /// Asks WeChat to push a ticket, unless it was asked within
    /// [`PUSH_REQUEST_INTERVAL`].
    async fn request_push(&self) {
        {
            let mut last = self.last_push_request.lock().expect("poisoned");
            if last.is_some_and(|at| at.elapsed() < PUSH_REQUEST_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        match self.api.start_push_ticket().await {
            Ok(()) => {
                info!(platform = %self.name, "no valid component_verify_ticket; asked wechat to push one")
            }
            Err(err) => warn!(platform = %self.name, error = %err, "api_start_push_ticket failed"),
        }
    }

    async fn wait_for_ticket(&self) -> Result<(), FetchError> {
        if self.current_ticket().await.is_some() {
            return Ok(());
        }
        let mut changes = self.ticket.subscribe();
        self.request_push().await;
        let arrived = tokio::time::timeout(self.wait, changes.wait_for(Option::is_some)).await;
        match arrived {
            Ok(Ok(_)) => Ok(()),
            _ => Err(FetchError::NoVerifyTicket),
        }
    }

    async fn fetch_with_ticket(&self) -> Result<TokenGrant, FetchError> {
        let ticket = self
            .current_ticket()
            .await
            .ok_or(FetchError::NoVerifyTicket)?;
        let result = self.api.component_token(&ticket).await;
        if let Err(FetchError::Api { errcode, .. }) = &result {
            if TICKET_REJECTED.contains(errcode) {
                warn!(platform = %self.name, errcode, "wechat refused the component_verify_ticket; asking for a new push");
                *self.rejected.lock().expect("poisoned") = Some(ticket.clone());
                self.ticket.send_if_modified(|held| {
                    let same = held.as_deref() == Some(&*ticket);
                    if same {
                        *held = None;
                    }
                    same
                });
                self.request_push().await;
            }
        }
        result
    }
}

impl TokenSource for ComponentSource {
    fn fetch(&self, _force_refresh: bool) -> BoxFuture<'_, Result<TokenGrant, FetchError>> {
        Box::pin(self.fetch_with_ticket())
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), FetchError>> {
        Box::pin(self.wait_for_ticket())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::broker::{
        AppView, BrokerContext, CredentialHandle, InvalidateOutcome, WechatTickets,
    };
    use crate::clock::Clock;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::secret::AccessToken;
    use crate::store::MemoryStore;

    const WAIT: Duration = Duration::from_secs(10);

    /// A component endpoint that issues a new token on every call.
    #[derive(Default)]
    struct Issuing {
        calls: AtomicU64,
    }

    impl TokenSource for Issuing {
        fn fetch(&self, _force_refresh: bool) -> BoxFuture<'_, Result<TokenGrant, FetchError>> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::ready(Ok(TokenGrant {
                token: AccessToken::new(format!("component-{n}")),
                expires_in: 7200,
            })))
        }
    }

    fn platform(extra: &str) -> PlatformConfig {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ncallback_listen = \"127.0.0.1:0\"\n[[platforms]]\nname = \"saas\"\ncomponent_appid = \"wxc\"\nsecret = \"s\"\ntoken = \"t\"\naes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\n{extra}\n"
        );
        let config = Config::from_toml_str("t.toml", &text).unwrap();
        config.platforms[0].clone()
    }

    /// The component token on the engine, fetched from `source`, with
    /// the clock at 2026-11-24 10:00 Beijing time.
    fn start(config: &PlatformConfig, source: Arc<Issuing>) -> (CredentialHandle, TaskTracker) {
        let tasks = TaskTracker::new();
        let context = BrokerContext {
            store: Arc::new(MemoryStore::new()),
            tickets: Arc::new(WechatTickets::new(reqwest::Client::new())),
            metrics: Metrics::new(),
            clock: Clock::starting_at(Duration::from_secs(1_795_975_200)),
            tasks: tasks.clone(),
            cancel: CancellationToken::new(),
        };
        let handle =
            CredentialHandle::spawn(Arc::new(spec(config)), source, &context, AppView::default());
        (handle, tasks)
    }

    /// Reports the token held now as rejected, `after` its fetch.
    async fn report_after(handle: &CredentialHandle, after: Duration) -> InvalidateOutcome {
        let held = handle.token(WAIT).await.unwrap();
        tokio::time::sleep(after).await;
        handle.invalidate(held.value.expose(), WAIT).await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_component_token_is_forced_on_its_platforms_own_min_forced_interval() {
        // 5 s: a rejection 6 s after the fetch refreshes, where an app's
        // 30 s would refuse it.
        let source = Arc::new(Issuing::default());
        let (handle, tasks) = start(&platform("min_forced_interval = \"5s\""), source.clone());
        let outcome = report_after(&handle, Duration::from_secs(2)).await;
        assert_eq!(outcome, InvalidateOutcome::RateLimited);
        let outcome = report_after(&handle, Duration::from_secs(4)).await;
        assert_eq!(outcome, InvalidateOutcome::Refreshed);
        assert_eq!(source.calls.load(Ordering::SeqCst), 2);
        handle.stopped().cancel();
        tasks.close();
        tasks.wait().await;

        // 2 min: one 40 s after the fetch is still refused.
        let source = Arc::new(Issuing::default());
        let (handle, tasks) = start(&platform("min_forced_interval = \"2m\""), source.clone());
        let outcome = report_after(&handle, Duration::from_secs(40)).await;
        assert_eq!(outcome, InvalidateOutcome::RateLimited);
        let outcome = report_after(&handle, Duration::from_secs(81)).await;
        assert_eq!(outcome, InvalidateOutcome::Refreshed);
        assert_eq!(source.calls.load(Ordering::SeqCst), 2);
        handle.stopped().cancel();
        tasks.close();
        tasks.wait().await;
    }
}
