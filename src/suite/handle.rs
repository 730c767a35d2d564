//! A running suite's read side, as the token API, the compatible
//! listener and the demo see it.
//!
//! STAND-IN: the signatures of the suite engine's handle, with bodies
//! that find nothing, so the surfaces built on it compile before the
//! engine exists. Replaced whole by the engine's own handle.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::CredentialHandle;
use crate::children::{ChildToken, Table};
use crate::config::SuiteConfig;
use crate::credential::TicketKind;
use crate::wechat::FetchError;

/// Why a corp's credential cannot be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorpError {
    /// No such corp has installed the suite (or it cancelled).
    NotFound,
    /// Installed, but with no valid token now.
    Unavailable,
    /// The suite's `corp_tickets` do not name that kind.
    TicketNotConfigured,
}

/// One suite. Cheap to clone.
#[derive(Clone)]
pub struct SuiteHandle {
    config: Arc<SuiteConfig>,
    suite_token: CredentialHandle,
    provider_token: Option<CredentialHandle>,
    corps: Arc<Table>,
}

impl SuiteHandle {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn config(&self) -> &SuiteConfig {
        &self.config
    }

    pub fn suite_token(&self) -> &CredentialHandle {
        &self.suite_token
    }

    pub fn provider_token(&self) -> Option<&CredentialHandle> {
        self.provider_token.as_ref()
    }

    pub fn corps(&self) -> &Arc<Table> {
        &self.corps
    }

    pub async fn corp_token(
        &self,
        _corpid: &str,
        _wait: Duration,
    ) -> Result<Arc<ChildToken>, CorpError> {
        Err(CorpError::NotFound)
    }

    pub async fn invalidate_corp(
        &self,
        _corpid: &str,
        _reported: &str,
        _wait: Duration,
    ) -> Result<(Arc<ChildToken>, bool), CorpError> {
        Err(CorpError::NotFound)
    }

    pub fn corp_ticket(
        &self,
        _corpid: &str,
        _kind: TicketKind,
    ) -> Result<CredentialHandle, CorpError> {
        Err(CorpError::NotFound)
    }

    pub async fn pre_auth_code(&self, _wait: Duration) -> Result<(String, u64), FetchError> {
        Err(FetchError::Parent("no suite engine".into()))
    }

    pub fn corp_name(&self, _corpid: &str) -> Option<String> {
        None
    }

    pub fn installed_at(&self, _corpid: &str) -> Option<u64> {
        None
    }
}
