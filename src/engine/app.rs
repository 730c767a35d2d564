//! The app kind (`[[apps]]`): its access token and the JS-SDK tickets
//! fetched with it, each a [`CredentialHandle`] with its own refresher.
//! Here, and only here, an app's settings become the [`CredentialSpec`]s
//! the engine runs.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use super::follower::Leader;
use super::schedule::Reissue;
use super::{CredentialHandle, CredentialSpec, CredentialView, EngineContext};
use crate::config::{AppConfig, AppKind, Grant, TicketConfig};
use crate::credential::{Credential, TicketKind};
use crate::store::{grant_label, StoreKey};
use crate::wechat::TokenSource;

/// How long WeChat keeps a replaced access token valid. A rejection of a
/// token younger than this, which the broker did not replace, means
/// something else fetched tokens for this appid in the meantime: a token
/// fight.
const WECHAT_OVERLAP: Duration = Duration::from_secs(300);

/// One app: its settings, its access token, and its tickets in
/// configuration order. Cheap to clone. It dereferences to the access
/// token's handle, the credential almost every caller means.
#[derive(Clone)]
pub struct AppHandle {
    config: Arc<AppConfig>,
    token: CredentialHandle,
    tickets: Arc<[(TicketKind, CredentialHandle)]>,
}

/// The spec of an app's access token.
pub(super) fn token_spec(app: &AppConfig) -> CredentialSpec {
    CredentialSpec {
        name: app.name.clone(),
        credential: Credential::AccessToken,
        grant: grant_label(app.kind, app.grant),
        key: StoreKey::for_app(app),
        refresh_before: app.refresh_before,
        min_forced_interval: app.min_forced_interval,
        fetch_timeout: app.fetch_timeout,
        daily_budget: app.daily_budget,
        budget_key: "daily_budget".to_owned(),
        reissue: match (app.kind, app.grant) {
            (AppKind::Wechat, Grant::Stable) => Reissue::UntilForced,
            (AppKind::Wechat, Grant::Classic) | (AppKind::Wecom, _) => Reissue::Fresh,
        },
        fight_window: Some(WECHAT_OVERLAP),
    }
}

/// The spec of one of an app's tickets: fetched with the app's token, on
/// the app's timings, within its own budget.
pub(super) fn ticket_spec(app: &AppConfig, ticket: &TicketConfig) -> CredentialSpec {
    let credential = Credential::Ticket(ticket.kind);
    CredentialSpec {
        name: app.name.clone(),
        credential,
        grant: grant_label(app.kind, app.grant),
        key: StoreKey::for_ticket(app, ticket.kind),
        refresh_before: app.refresh_before,
        min_forced_interval: app.min_forced_interval,
        fetch_timeout: app.fetch_timeout,
        daily_budget: ticket.daily_budget,
        budget_key: format!("ticket_budget.{}", ticket.kind),
        reissue: Reissue::UntilExpiry,
        fight_window: None,
    }
}

/// Every credential spec of `app`, the token first.
fn specs(app: &AppConfig) -> impl Iterator<Item = CredentialSpec> + '_ {
    std::iter::once(token_spec(app)).chain(app.tickets.iter().map(|t| ticket_spec(app, t)))
}

impl Deref for AppHandle {
    type Target = CredentialHandle;

    fn deref(&self) -> &CredentialHandle {
        &self.token
    }
}

/// What a restarted app starts from: the views of the credentials it
/// keeps, by credential.
#[derive(Default)]
pub(super) struct Seed {
    views: Vec<(Credential, CredentialView)>,
}

impl Seed {
    fn take(&mut self, credential: Credential) -> CredentialView {
        match self.views.iter().position(|(c, _)| *c == credential) {
            Some(at) => self.views.swap_remove(at).1,
            None => CredentialView::default(),
        }
    }
}

impl AppHandle {
    /// Starts the app's refreshers on `context.tasks`: the token's with
    /// `source`, each ticket's with a source fetching it with the token.
    pub(super) fn spawn(
        config: Arc<AppConfig>,
        source: Arc<dyn TokenSource>,
        context: &EngineContext,
        mut seed: Seed,
    ) -> AppHandle {
        // Each credential's fetches show at 0 before the first, so that
        // one is seen by `increase()`; and a follower's stay at 0.
        let series = context.metrics.app(&config.name);
        for spec in specs(&config) {
            series.show_fetches(spec.credential.label());
        }
        // A follower app's credentials, its tickets too, are all read
        // from its leader: no refresher, so no upstream call, ever.
        if let Some(follow) = &config.follow {
            let leader = Leader::new(follow);
            let mut follower = |spec: CredentialSpec| {
                let seed = seed.take(spec.credential);
                CredentialHandle::spawn_follower(Arc::new(spec), leader.clone(), context, seed)
            };
            let token = follower(token_spec(&config));
            let tickets = config
                .tickets
                .iter()
                .map(|ticket| (ticket.kind, follower(ticket_spec(&config, ticket))))
                .collect();
            return AppHandle {
                config,
                token,
                tickets,
            };
        }
        let token = CredentialHandle::spawn(
            Arc::new(token_spec(&config)),
            source,
            context,
            seed.take(Credential::AccessToken),
        );
        let tickets = config
            .tickets
            .iter()
            .map(|ticket| {
                let spec = ticket_spec(&config, ticket);
                let seed = seed.take(spec.credential);
                let source = context.tickets.source(&config, ticket.kind, token.clone());
                let handle = CredentialHandle::spawn(Arc::new(spec), source, context, seed);
                (ticket.kind, handle)
            })
            .collect();
        AppHandle {
            config,
            token,
            tickets,
        }
    }

    /// The app's settings.
    pub fn config(&self) -> &AppConfig {
        &self.config
    }

    /// The handle of the app's `kind` ticket, if it has one.
    pub fn ticket(&self, kind: TicketKind) -> Option<&CredentialHandle> {
        self.tickets
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, handle)| handle)
    }

    /// The app's tickets, in configuration order.
    pub fn tickets(&self) -> impl Iterator<Item = (TicketKind, &CredentialHandle)> {
        self.tickets.iter().map(|(kind, handle)| (*kind, handle))
    }

    /// Every credential of the app, the token first.
    pub fn credentials(&self) -> impl Iterator<Item = &CredentialHandle> {
        std::iter::once(&self.token).chain(self.tickets.iter().map(|(_, handle)| handle))
    }

    /// [`CredentialHandle::lift_quota_hold`] for every credential of the
    /// app: its tickets count on the same WeChat quota as its token.
    pub fn lift_quota_hold(&self) {
        self.credentials()
            .for_each(CredentialHandle::lift_quota_hold);
    }

    /// Stops every refresher of the app and waits until all have ended.
    pub(super) async fn stop(&self) {
        join_all(self.credentials().map(CredentialHandle::stop)).await;
    }

    /// What the app's replacement with `config` starts from: the final
    /// view of each credential that is the same one upstream.
    pub(super) fn seed_for(&self, config: &AppConfig) -> Seed {
        let next: Vec<CredentialSpec> = specs(config).collect();
        Seed {
            views: self
                .credentials()
                .filter(|handle| next.iter().any(|spec| handle.spec().same_upstream(spec)))
                .map(|handle| (handle.credential(), handle.view()))
                .collect(),
        }
    }
}
