//! One app's credentials: its access token and the JS-SDK tickets
//! fetched with it, each a [`CredentialHandle`] with its own refresher.

use std::ops::Deref;
use std::sync::Arc;

use futures_util::future::join_all;

use super::follower::Leader;
use super::{AppView, BrokerContext, CredentialHandle, InvalidateOutcome};
use crate::config::AppConfig;
use crate::credential::{Credential, TicketKind};
use crate::metrics::AppLabels;
use crate::wechat::TokenSource;

/// One app: its access token, and its tickets in configuration order.
/// Cheap to clone. It dereferences to the access token's handle, the
/// credential almost every caller means.
#[derive(Clone)]
pub struct AppHandle {
    token: CredentialHandle,
    tickets: Arc<[(TicketKind, CredentialHandle)]>,
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
    views: Vec<(Credential, AppView)>,
}

impl Seed {
    fn take(&mut self, credential: Credential) -> AppView {
        match self.views.iter().position(|(c, _)| *c == credential) {
            Some(at) => self.views.swap_remove(at).1,
            None => AppView::default(),
        }
    }
}

impl AppHandle {
    /// Starts the app's refreshers on `context.tasks`: the token's with
    /// `source`, each ticket's with a source fetching it with the token.
    pub(super) fn spawn(
        config: Arc<AppConfig>,
        source: Arc<dyn TokenSource>,
        context: &BrokerContext,
        mut seed: Seed,
    ) -> AppHandle {
        let errcodes: Vec<&str> = crate::wechat::errcode_labels().collect();
        let outcomes = InvalidateOutcome::ALL.map(InvalidateOutcome::metric_label);
        let credentials: Vec<&str> = std::iter::once(Credential::AccessToken)
            .chain(config.tickets.iter().map(|t| Credential::Ticket(t.kind)))
            .map(Credential::label)
            .collect();
        let ticket_kinds: Vec<&str> = config.tickets.iter().map(|t| t.kind.name()).collect();
        context.metrics.init_app(
            &config.name,
            &AppLabels {
                credentials: &credentials,
                ticket_kinds: &ticket_kinds,
                fetch_results: &crate::wechat::RESULT_LABELS,
                errcodes: &errcodes,
                forced_refresh_outcomes: &outcomes,
            },
        );
        // A follower app's credentials, its tickets too, are all read
        // from its leader: no refresher, so no upstream call, ever.
        if let Some(follow) = &config.follow {
            let leader = Leader::new(follow);
            let mut follower = |credential: Credential| {
                // At zero from the start, so an alert sees the first flip.
                context
                    .metrics
                    .follower_flips
                    .with_label_values(&[&config.name, credential.label()]);
                CredentialHandle::spawn_follower(
                    config.clone(),
                    credential,
                    leader.clone(),
                    context,
                    seed.take(credential),
                )
            };
            let token = follower(Credential::AccessToken);
            let tickets = config
                .tickets
                .iter()
                .map(|ticket| (ticket.kind, follower(Credential::Ticket(ticket.kind))))
                .collect();
            return AppHandle { token, tickets };
        }
        let token = CredentialHandle::spawn(
            config.clone(),
            Credential::AccessToken,
            config.daily_budget,
            source,
            context,
            seed.take(Credential::AccessToken),
        );
        let tickets = config
            .tickets
            .iter()
            .map(|ticket| {
                let credential = Credential::Ticket(ticket.kind);
                let source = context.tickets.source(&config, ticket.kind, token.clone());
                let handle = CredentialHandle::spawn(
                    config.clone(),
                    credential,
                    ticket.daily_budget,
                    source,
                    context,
                    seed.take(credential),
                );
                (ticket.kind, handle)
            })
            .collect();
        AppHandle { token, tickets }
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
        Seed {
            views: self
                .credentials()
                .filter(|handle| handle.same_credential_in(config))
                .map(|handle| (handle.credential(), handle.view()))
                .collect(),
        }
    }
}
