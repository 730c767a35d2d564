//! The `suite_access_token` as a credential kind: an engine credential of
//! the pushed-ticket shape, fetched with the newest `suite_ticket`
//! ([`super::held_ticket`]). WeCom has no API to push a ticket again, so
//! without a valid one the suite makes no call and waits for the push,
//! saying so on every attempt.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::config::SuiteConfig;
use crate::credential::Credential;
use crate::engine::{
    CredentialSpec, KeptTicket, PushedTicketCaller, PushedTicketShape, PushedTicketSource, Reissue,
    TicketCell, TicketKeeper,
};
use crate::platform::store::PlatformStore;
use crate::store::{StoreError, StoreKey};

/// The shortest time between two refreshes a rejection forces.
pub const MIN_FORCED_INTERVAL: Duration = Duration::from_secs(30);

/// `get_suite_token`; 40085: the ticket is invalid, expired or another
/// suite's.
pub static SHAPE: PushedTicketShape = PushedTicketShape {
    ticket: "suite_ticket",
    ticket_lifetime: Duration::from_secs(super::ticket::TICKET_LIFETIME_SECS),
    token_path: "/cgi-bin/service/get_suite_token",
    id_field: "suite_id",
    secret_field: "suite_secret",
    ticket_field: "suite_ticket",
    value_field: "suite_access_token",
    ticket_rejected: &[40085],
    push_request: None,
};

/// The suite token's spec. WeCom answers with the token it holds until
/// that one expires, so asking early only spends the budget: it is asked
/// for once it has died ([`Reissue::UntilExpiry`]), and a same-token
/// answer is a success that keeps the held expiry.
pub fn spec(config: &SuiteConfig) -> CredentialSpec {
    let credential = Credential::SuiteAccessToken;
    CredentialSpec {
        name: config.name.clone(),
        credential,
        grant: credential.label(),
        key: StoreKey::of_platform(&config.name, &config.suite_id, credential),
        refresh_before: config.refresh_before,
        min_forced_interval: MIN_FORCED_INTERVAL,
        fetch_timeout: config.fetch_timeout,
        daily_budget: config.daily_budget,
        budget_key: "daily_budget".to_owned(),
        reissue: Reissue::UntilExpiry,
        fight_window: None,
    }
}

/// The suite token's source: fetched with the ticket in `ticket`, else
/// the one the suite's store keeps (another broker of the fleet may have
/// received the push).
pub fn source(
    http: reqwest::Client,
    config: &SuiteConfig,
    ticket: Arc<TicketCell>,
    store: Arc<dyn PlatformStore>,
    clock: crate::clock::Clock,
) -> PushedTicketSource {
    let caller = PushedTicketCaller {
        http,
        api_base: config.api_base.clone(),
        id: config.suite_id.clone(),
        secret: config.secret.clone(),
        timeout: config.fetch_timeout,
    };
    let keeper = Arc::new(StoredSuiteTicket(store));
    PushedTicketSource::new(&SHAPE, caller, ticket, keeper, clock)
}

/// The suite ticket the suite's store keeps, dated by its `TimeStamp`.
struct StoredSuiteTicket(Arc<dyn PlatformStore>);

impl TicketKeeper for StoredSuiteTicket {
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
