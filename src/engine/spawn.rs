//! Starting a credential: its handle, and the task of its only writer
//! (a refresher, or a follower reading a leader).

use std::sync::Arc;

use super::follower::{Follower, Leader};
use super::handle::CredentialHandle;
use super::refresher::coordination::{self, Coordination};
use super::refresher::Refresher;
use super::{CredentialSpec, CredentialView, EngineContext};
use crate::wechat::TokenSource;

impl CredentialHandle {
    /// Starts the credential's refresher on `context.tasks`, fetching
    /// from `source` as `spec` says, and publishing `seed` first (a
    /// reload carries the running credential over).
    pub(crate) fn spawn(
        spec: Arc<CredentialSpec>,
        source: Arc<dyn TokenSource>,
        context: &EngineContext,
        seed: CredentialView,
    ) -> CredentialHandle {
        let coordination = coordination::for_store(&context.store);
        CredentialHandle::spawn_coordinated(spec, source, coordination, context, seed)
    }

    /// [`CredentialHandle::spawn`] with the coordination given.
    pub(super) fn spawn_coordinated(
        spec: Arc<CredentialSpec>,
        source: Arc<dyn TokenSource>,
        coordination: Box<dyn Coordination>,
        context: &EngineContext,
        seed: CredentialView,
    ) -> CredentialHandle {
        let (handle, command_rx) = CredentialHandle::new(spec, context, seed);
        let refresher = Refresher::new(source, handle.clone(), command_rx, context);
        handle.run_writer(context, refresher.run(coordination));
        handle
    }

    /// Starts a follower app's credential: its writer is a [`Follower`]
    /// reading `leader`, never a refresher, so this broker makes no
    /// upstream call for it. Readers and invalidations use the handle as
    /// for any other credential.
    pub(super) fn spawn_follower(
        spec: Arc<CredentialSpec>,
        leader: Arc<Leader>,
        context: &EngineContext,
        seed: CredentialView,
    ) -> CredentialHandle {
        let (handle, command_rx) = CredentialHandle::new(spec, context, seed);
        let follower = Follower::new(leader, handle.clone(), command_rx, context);
        handle.run_writer(context, follower.run());
        handle
    }
}
