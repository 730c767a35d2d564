//! Re-reading the configuration on SIGHUP without stalling the loop that
//! also waits for SIGTERM.
//!
//! Reading opens files the operator names (the configuration and every
//! `secret_file`), and a file can block: a FIFO used as the configuration,
//! a hung network mount. So each read runs on a thread of its own and the
//! signal loop merely awaits its answer. A plain thread, not tokio's
//! blocking pool: the runtime waits for its blocking tasks when it is
//! dropped, so a stuck read there would keep the process alive after
//! SIGTERM, while a detached thread ends with the process.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::config::{Config, ConfigError};
use crate::errors::Chain;

/// Why a reload produced no configuration.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("could not start a thread to read the configuration")]
    Thread(#[source] std::io::Error),
    #[error("the thread reading the configuration ended without an answer")]
    Lost,
}

/// What [`ConfigReloads::request`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// A read started now.
    Started,
    /// A read was already running (for this long); one more starts when it
    /// ends, so a SIGHUP sent after an edit always sees that edit.
    Queued { running_for: Duration },
}

/// The reads of one configuration file, at most one at a time.
pub struct ConfigReloads {
    path: PathBuf,
    in_flight: Option<InFlight>,
    queued: bool,
}

struct InFlight {
    answer: oneshot::Receiver<Result<Config, ConfigError>>,
    started: Instant,
}

impl ConfigReloads {
    pub fn new(path: PathBuf) -> ConfigReloads {
        ConfigReloads {
            path,
            in_flight: None,
            queued: false,
        }
    }

    /// Starts reading the file, or queues one more read behind the running
    /// one. Requests made while a read is queued merge with it: however
    /// many SIGHUPs arrive during a stuck read, one thread waits behind it
    /// at most.
    pub fn request(&mut self) -> Result<Requested, ReloadError> {
        match &self.in_flight {
            Some(running) => {
                self.queued = true;
                Ok(Requested::Queued {
                    running_for: running.started.elapsed(),
                })
            }
            None => {
                self.start()?;
                Ok(Requested::Started)
            }
        }
    }

    /// Whether a read is running.
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The outcome of the running read; pending forever when none runs.
    /// Cancel-safe, for `select!`: the answer stays put until awaited to
    /// the end.
    pub async fn finished(&mut self) -> Result<Config, ReloadError> {
        let Some(running) = self.in_flight.as_mut() else {
            return std::future::pending().await;
        };
        let outcome = match (&mut running.answer).await {
            Ok(loaded) => loaded.map_err(ReloadError::from),
            Err(_) => Err(ReloadError::Lost),
        };
        self.in_flight = None;
        if std::mem::take(&mut self.queued) {
            // This read may have begun before the edit the queued request
            // was sent for; its outcome stands all the same, and the queued
            // read follows with the newer file.
            if let Err(err) = self.start() {
                tracing::error!(error = %Chain(&err), "the queued configuration reload did not start");
            }
        }
        outcome
    }

    fn start(&mut self) -> Result<(), ReloadError> {
        let (tell, answer) = oneshot::channel();
        let path = self.path.clone();
        std::thread::Builder::new()
            .name("config-reload".into())
            .spawn(move || {
                // Nobody listening any more (shutting down) is fine.
                let _ = tell.send(Config::load(&path));
            })
            .map_err(ReloadError::Thread)?;
        self.in_flight = Some(InFlight {
            answer,
            started: Instant::now(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "[server]\nlisten = \"127.0.0.1:0\"\n[[apps]]\nname = \"shop\"\n\
                         appid = \"wx1\"\nsecret = \"s3cr3t\"\n";

    async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), future)
            .await
            .expect("the read finishes")
    }

    #[tokio::test]
    async fn reads_run_one_at_a_time_and_a_request_during_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wxbroker.toml");
        std::fs::write(&path, VALID).unwrap();
        let mut reloads = ConfigReloads::new(path.clone());
        assert!(!reloads.in_flight());

        assert_eq!(reloads.request().unwrap(), Requested::Started);
        assert!(matches!(
            reloads.request().unwrap(),
            Requested::Queued { .. }
        ));
        assert!(matches!(
            reloads.request().unwrap(),
            Requested::Queued { .. }
        ));
        let first = within(reloads.finished()).await.unwrap();
        assert_eq!(first.apps[0].name, "shop");
        // The queued requests became exactly one more read.
        assert!(reloads.in_flight());
        within(reloads.finished()).await.unwrap();
        assert!(!reloads.in_flight());

        std::fs::write(&path, "[server\n").unwrap();
        reloads.request().unwrap();
        let err = within(reloads.finished()).await.unwrap_err();
        assert!(matches!(err, ReloadError::Config(_)), "{err}");
    }

    #[test]
    fn nothing_finishes_when_nothing_was_asked() {
        use futures_util::FutureExt;
        let mut reloads = ConfigReloads::new("/nonexistent".into());
        assert!(reloads.finished().now_or_never().is_none());
    }
}
