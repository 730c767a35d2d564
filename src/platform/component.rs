//! The Open Platform's component token as a credential kind: its spec,
//! from its platform's own settings, and its source, the engine's
//! pushed-ticket source fetching `api_component_token` with the latest
//! `component_verify_ticket` WeChat pushed. The refresher engine owns
//! everything else (single flight, proactive refresh, budget, storage,
//! the fleet's lock), as for an access token.
//!
//! Without a ticket the source makes no call and spends nothing: it asks
//! WeChat to push one (`api_start_push_ticket`, at most once per 10
//! minutes) and waits a while for the push to arrive.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::store::PlatformStore;
use crate::config::PlatformConfig;
use crate::credential::Credential;
use crate::engine::{
    CredentialSpec, KeptTicket, PushRequest, PushedTicketCaller, PushedTicketShape,
    PushedTicketSource, Reissue, TicketKeeper,
};
use crate::store::{StoreError, StoreKey};

pub use crate::engine::{TicketCell, PUSH_REQUEST_INTERVAL};

/// A verify ticket is valid 12 hours after its push.
pub const TICKET_LIFETIME_SECS: u64 = 12 * 3600;

/// `api_component_token`, and `api_start_push_ticket` to ask for a push.
/// 61005: the verify ticket expired; 61006: it is invalid.
pub static SHAPE: PushedTicketShape = PushedTicketShape {
    ticket: "component_verify_ticket",
    ticket_lifetime: Duration::from_secs(TICKET_LIFETIME_SECS),
    token_path: "/cgi-bin/component/api_component_token",
    id_field: "component_appid",
    secret_field: "component_appsecret",
    ticket_field: "component_verify_ticket",
    value_field: "component_access_token",
    ticket_rejected: &[61005, 61006],
    push_request: Some(PushRequest {
        path: "/cgi-bin/component/api_start_push_ticket",
        id_field: "component_appid",
        secret_field: "component_secret",
    }),
};

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

/// The component token's source: fetched with the ticket in `ticket`,
/// else the one the platform's store kept.
pub fn source(
    http: reqwest::Client,
    config: &PlatformConfig,
    ticket: Arc<TicketCell>,
    store: Arc<dyn PlatformStore>,
    clock: crate::clock::Clock,
) -> PushedTicketSource {
    let caller = PushedTicketCaller {
        http,
        api_base: config.api_base.clone(),
        id: config.component_appid.clone(),
        secret: config.secret.clone(),
        timeout: config.fetch_timeout,
    };
    let keeper = Arc::new(StoredVerifyTicket(store));
    PushedTicketSource::new(&SHAPE, caller, ticket, keeper, clock)
}

/// The verify ticket the platform's store keeps.
struct StoredVerifyTicket(Arc<dyn PlatformStore>);

impl TicketKeeper for StoredVerifyTicket {
    fn load_ticket(&self) -> BoxFuture<'_, Result<Option<KeptTicket>, StoreError>> {
        Box::pin(async {
            let stored = self.0.load_ticket().await?;
            Ok(stored.map(|stored| KeptTicket {
                ticket: stored.ticket,
                received_at: stored.received_at,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::clock::Clock;
    use crate::config::Config;
    use crate::engine::{
        CredentialHandle, CredentialView, EngineContext, InvalidateOutcome, WechatTickets,
    };
    use crate::metrics::Metrics;
    use crate::secret::AccessToken;
    use crate::store::MemoryStore;
    use crate::wechat::{FetchError, TokenGrant, TokenSource};

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
        let context = EngineContext {
            store: Arc::new(MemoryStore::new()),
            tickets: Arc::new(WechatTickets::new(reqwest::Client::new())),
            metrics: Metrics::new(),
            clock: Clock::starting_at(Duration::from_secs(1_795_975_200)),
            tasks: tasks.clone(),
            cancel: CancellationToken::new(),
            token_checks: crate::engine::TokenChecks::default(),
        };
        let handle = CredentialHandle::spawn(
            Arc::new(spec(config)),
            source,
            &context,
            CredentialView::default(),
        );
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
