//! Token sinks: for an app with `sink = { path, format, mode }`, a task that
//! keeps that file holding the app's current token, for programs that can
//! only read a file (a cron job, a legacy script, an init container's
//! hand-off to the main container).
//!
//! The task follows the app's published view and rewrites the file when
//! the token (or its expiry) changes, atomically through the file store's
//! writer, so a reader sees the previous token or the next one, never a
//! torn file. It is the only writer of its file. A failed write is logged
//! and retried; the file is left in place at shutdown (its `expires_at`
//! says how long it is good for).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{SinkConfig, SinkFormat};
use crate::engine::{AppHandle, CredentialRecord, CredentialView};
use crate::errors::Chain;
use crate::files::{write_atomically, AtomicWriteError};

/// How soon a failed write is tried again when no new token comes first.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Why a sink file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("app {app}: sink {}: {op}", path.display())]
    Write {
        app: String,
        path: PathBuf,
        /// The step that failed: `write`, `rename` or `sync`.
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("app {app}: the sink task has stopped")]
    Stopped { app: String },
}

type FlushReply = oneshot::Sender<Result<(), SinkError>>;

/// The control side of one app's sink task.
#[derive(Clone)]
pub struct SinkHandle {
    app: String,
    flushes: mpsc::Sender<FlushReply>,
}

impl SinkHandle {
    /// The app whose token this sink writes.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// Makes sure the file holds the app's current token (if it has one),
    /// writing it now if it does not, and says whether it does.
    pub async fn flush(&self) -> Result<(), SinkError> {
        let stopped = || SinkError::Stopped {
            app: self.app.clone(),
        };
        let (reply, outcome) = oneshot::channel();
        self.flushes.send(reply).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// Starts the sink task of `app` on `tasks`. It writes once more when
/// `cancel` fires, so a token adopted just before shutdown is not lost.
pub fn spawn(
    app: AppHandle,
    config: SinkConfig,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
) -> SinkHandle {
    let (flushes, flush_rx) = mpsc::channel(8);
    let handle = SinkHandle {
        app: app.name().to_owned(),
        flushes,
    };
    let task = SinkTask {
        views: app.subscribe(),
        app,
        config,
        written: None,
    };
    tasks.spawn(task.run(flush_rx, cancel.clone()));
    handle
}

struct SinkTask {
    app: AppHandle,
    config: SinkConfig,
    views: watch::Receiver<CredentialView>,
    /// The token the file holds, as last written by this task.
    written: Option<Arc<CredentialRecord>>,
}

impl SinkTask {
    async fn run(mut self, mut flushes: mpsc::Receiver<FlushReply>, cancel: CancellationToken) {
        let mut retry_at = self.sync_or_retry().await;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    let _ = self.sync().await;
                    return;
                }
                Some(reply) = flushes.recv() => {
                    let result = self.sync().await;
                    retry_at = result.is_err().then(|| Instant::now() + RETRY_AFTER);
                    let _ = reply.send(result);
                }
                changed = self.views.changed() => {
                    if changed.is_err() {
                        // The refresher is gone: nothing will change again.
                        return;
                    }
                    retry_at = self.sync_or_retry().await;
                }
                () = sleep_until(retry_at), if retry_at.is_some() => {
                    retry_at = self.sync_or_retry().await;
                }
            }
        }
    }

    async fn sync_or_retry(&mut self) -> Option<Instant> {
        self.sync()
            .await
            .err()
            .map(|_| Instant::now() + RETRY_AFTER)
    }

    /// Writes the current token unless the file already holds it.
    async fn sync(&mut self) -> Result<(), SinkError> {
        let Some(token) = self.views.borrow_and_update().token.clone() else {
            return Ok(());
        };
        if self.written.as_deref() == Some(&*token) {
            return Ok(());
        }
        let bytes = render(
            self.config.format,
            self.app.name(),
            &token,
            self.app.now_ms(),
        );
        let path = self.config.path.clone();
        let mode = self.config.mode;
        let result = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes, mode))
            .await
            .expect("sink write panicked");
        match result {
            Ok(()) => {
                info!(
                    app = %self.app.name(),
                    path = %self.config.path.display(),
                    token = %token.value.fingerprint(),
                    "token sink written"
                );
                self.written = Some(token);
                Ok(())
            }
            Err(AtomicWriteError { op, source }) => {
                let err = SinkError::Write {
                    app: self.app.name().to_owned(),
                    path: self.config.path.clone(),
                    op,
                    source,
                };
                warn!(error = %Chain(&err), retry_in = ?RETRY_AFTER, "could not write the token sink");
                Err(err)
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The file's content. `expires_in` is as of the write; readers that keep
/// the file should go by `expires_at`.
fn render(format: SinkFormat, app: &str, token: &CredentialRecord, now_ms: u64) -> Vec<u8> {
    match format {
        SinkFormat::Json => {
            let mut bytes = serde_json::to_vec(&json!({
                "access_token": token.value.expose(),
                "expires_at": token.expires_at(),
                "expires_in": token.expires_in(now_ms),
                "app": app,
            }))
            .expect("a JSON object always serializes");
            bytes.push(b'\n');
            bytes
        }
        SinkFormat::Raw => format!("{}\n", token.value.expose()).into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::AccessToken;

    fn token() -> CredentialRecord {
        CredentialRecord {
            value: AccessToken::new("ACCESS-TOKEN"),
            expires_at_ms: 10_000_500,
            fetched_at_ms: 3_000_000,
        }
    }

    #[test]
    fn json_holds_the_token_its_expiry_and_the_app() {
        let bytes = render(SinkFormat::Json, "shop", &token(), 9_000_000);
        assert_eq!(bytes.last(), Some(&b'\n'));
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            value,
            json!({
                "access_token": "ACCESS-TOKEN",
                "expires_at": 10_000,
                "expires_in": 1000,
                "app": "shop",
            })
        );
    }

    #[test]
    fn raw_is_the_bare_token_and_a_newline() {
        let bytes = render(SinkFormat::Raw, "shop", &token(), 0);
        assert_eq!(bytes, b"ACCESS-TOKEN\n");
    }
}
