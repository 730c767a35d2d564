//! The call audit (DESIGN.md section 20): one record per call the broker
//! forwards to WeChat (the `/v1` proxies and the compatible listeners),
//! saying who called what, for which app or authorizer, and what WeChat
//! answered (status, errcode, the `rid` WeChat's support can look up),
//! and how long it took. Each record is a `tracing` event on target
//! `wxbroker::audit` and, with `[log] audit_file`, a JSON line in that
//! file (`file`), rotated by size.
//!
//! Recording never slows a forwarded call: a finished call is counted
//! (`wxbroker_proxied_calls_total`) and put in a bounded queue without
//! waiting; when the queue is full the record is dropped and counted
//! (`wxbroker_audit_dropped_total`). One writer task drains the queue,
//! emits the events and appends the lines off the async threads. It
//! follows `[log]` across reloads ([`AuditControl::apply`]), and at
//! shutdown it writes every record still queued before it stops.

mod file;
mod record;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::{IntCounter, IntCounterVec, Opts};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::config::LogConfig;
use crate::errors::Chain;
use crate::identity::Clients;
use crate::metrics::{KeptCounterVec, Metrics};
use file::AuditFile;
pub use file::AuditFileError;
pub use record::{Call, CallRecord, Outcome, Reply, Target, Verdict};

/// Finished calls that may wait for the writer. Past it a record is
/// dropped, never waited for: a burst of this size is some seconds of a
/// busy broker's calls.
pub const QUEUE_CAPACITY: usize = 4096;

/// Records the writer takes at once.
const BATCH: usize = 256;

/// How long the writer rests after a partial batch, so that records
/// gather rather than wake it one by one. At this pause a full queue is
/// `QUEUE_CAPACITY` calls in 20 ms, 200,000 a second.
const GATHER_PAUSE: Duration = Duration::from_millis(20);

/// After a failed write, the file is tried again no sooner than this, and
/// the failure is logged once per attempt.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The client label of a call from no configured client.
const UNKNOWN_CLIENT: &str = "unknown";

/// Where audit records go besides the log: `[log] audit_file` and its
/// size bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub file: Option<PathBuf>,
    pub max_bytes: u64,
}

impl AuditSettings {
    pub fn of(log: &LogConfig) -> Self {
        AuditSettings {
            file: log.audit_file.clone(),
            max_bytes: log.audit_max_bytes,
        }
    }
}

/// The audit's metrics.
#[derive(Clone)]
struct AuditMetrics {
    calls: KeptCounterVec,
    dropped: IntCounter,
    write_errors: IntCounter,
}

impl AuditMetrics {
    fn new(metrics: &Metrics) -> Self {
        let calls = IntCounterVec::new(
            Opts::new(
                "wxbroker_proxied_calls_total",
                "Forwarded calls by app (or platform), configured client (else \"unknown\") and outcome (ok, errcode, upstream_error, refused).",
            ),
            &["app", "client", "outcome"],
        )
        .expect("valid metric");
        let dropped = IntCounter::new(
            "wxbroker_audit_dropped_total",
            "Audit records dropped because the writer's queue was full.",
        )
        .expect("valid metric");
        let write_errors = IntCounter::new(
            "wxbroker_audit_write_errors_total",
            "Failed writes of the audit file (the records still reach the log).",
        )
        .expect("valid metric");
        metrics.register(Box::new(calls.clone()));
        metrics.register(Box::new(dropped.clone()));
        metrics.register(Box::new(write_errors.clone()));
        AuditMetrics {
            calls: KeptCounterVec::new(calls),
            dropped,
            write_errors,
        }
    }
}

/// Where finished calls go; cheap to clone, never waits.
#[derive(Clone)]
pub struct Auditor {
    queue: mpsc::Sender<CallRecord>,
    metrics: AuditMetrics,
    /// The configured clients (replaced by a reload), whose names alone
    /// become metric labels.
    clients: Arc<ArcSwap<Clients>>,
}

impl Auditor {
    /// Records `call` as ended with `verdict`: counted now, queued for the
    /// writer without waiting (dropped and counted when the queue is full).
    pub fn finish(&self, call: Call, verdict: Verdict) {
        let record = call.finish(verdict);
        let client = if self.clients.load().has_name(record.client()) {
            record.client()
        } else {
            UNKNOWN_CLIENT
        };
        self.metrics.calls.inc(&[
            record.target().configured_name(),
            client,
            record.outcome().label(),
        ]);
        if self.queue.try_send(record).is_err() {
            self.metrics.dropped.inc();
        }
    }
}

/// The daemon's hold on the writer: where it writes.
pub struct AuditControl {
    settings: watch::Sender<AuditSettings>,
}

impl AuditControl {
    /// Applies `[log] audit_file` and `audit_max_bytes` (a reload). The
    /// file is reopened even when they are unchanged, so a file an
    /// external logrotate moved away is followed by a fresh one.
    pub fn apply(&self, settings: AuditSettings) {
        self.settings.send_replace(settings);
    }
}

/// Starts the writer on `tasks`. It stops once every [`Auditor`] is gone
/// (the listeners have drained) or, after `cancel`, at the latest `drain`
/// later, writing what is queued first.
pub fn spawn(
    settings: AuditSettings,
    metrics: &Metrics,
    clients: Arc<ArcSwap<Clients>>,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
    drain: Duration,
) -> (Auditor, AuditControl) {
    let metrics = AuditMetrics::new(metrics);
    let (queue, records) = mpsc::channel(QUEUE_CAPACITY);
    let (settings_tx, settings_rx) = watch::channel(settings);
    let writer = Writer {
        file: None,
        retry_at: None,
        metrics: metrics.clone(),
    };
    tasks.spawn(writer.run(records, settings_rx, cancel.clone(), drain));
    (
        Auditor {
            queue,
            metrics,
            clients,
        },
        AuditControl {
            settings: settings_tx,
        },
    )
}

/// The one writer of the audit file.
struct Writer {
    file: Option<AuditFile>,
    /// After a failed write: no attempt before this.
    retry_at: Option<Instant>,
    metrics: AuditMetrics,
}

impl Writer {
    async fn run(
        mut self,
        mut records: mpsc::Receiver<CallRecord>,
        mut settings: watch::Receiver<AuditSettings>,
        cancel: CancellationToken,
        drain: Duration,
    ) {
        let current = settings.borrow_and_update().clone();
        self.configure(current).await;
        let stop = async {
            cancel.cancelled().await;
            tokio::time::sleep(drain).await;
        };
        tokio::pin!(stop);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            // Settings first: a record finished after a reload applied
            // its settings goes where they say.
            tokio::select! {
                biased;
                Ok(()) = settings.changed() => {
                    let current = settings.borrow_and_update().clone();
                    self.configure(current).await;
                }
                received = records.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        break;
                    }
                    self.write(&mut batch).await;
                    // Records gather while the writer rests: one wake-up
                    // per pause under load, not one per forwarded call.
                    if received < BATCH {
                        tokio::time::sleep(GATHER_PAUSE).await;
                    }
                }
                () = &mut stop => break,
            }
        }
        records.close();
        while let Ok(record) = records.try_recv() {
            batch.push(record);
            if batch.len() == BATCH {
                self.write(&mut batch).await;
            }
        }
        self.write(&mut batch).await;
    }

    /// Closes the file in use and opens the configured one, so a bad
    /// path is reported at once.
    async fn configure(&mut self, settings: AuditSettings) {
        self.file = None;
        self.retry_at = None;
        let Some(path) = settings.file else {
            return;
        };
        let file = AuditFile::new(path, settings.max_bytes);
        let Some((file, result)) = blocking(file, |file| file.prepare()).await else {
            return;
        };
        match result {
            Ok(()) => info!(path = %file.path().display(), "audit file open"),
            Err(err) => self.failed(&err),
        }
        self.file = Some(file);
    }

    /// Emits each record as an event, then appends them to the file (when
    /// there is one and it is not waiting out a failure).
    async fn write(&mut self, batch: &mut Vec<CallRecord>) {
        if batch.is_empty() {
            return;
        }
        for record in batch.iter() {
            record.emit();
        }
        let retrying = self.retry_at.is_some_and(|at| Instant::now() < at);
        let file = match self.file.take() {
            Some(file) if !retrying => file,
            kept => {
                self.file = kept;
                batch.clear();
                return;
            }
        };
        let lines: Vec<Vec<u8>> = batch.drain(..).map(|r| r.to_json_line()).collect();
        let Some((file, result)) = blocking(file, move |file| file.append(&lines)).await else {
            return;
        };
        match result {
            Ok(()) => self.retry_at = None,
            Err(err) => self.failed(&err),
        }
        self.file = Some(file);
    }

    fn failed(&mut self, err: &AuditFileError) {
        self.metrics.write_errors.inc();
        self.retry_at = Some(Instant::now() + RETRY_AFTER);
        error!(
            error = %Chain(err),
            retry_in = ?RETRY_AFTER,
            "audit file unusable; audit records reach the log only until it works again"
        );
    }
}

/// Runs `work` on `file` on the blocking pool, handing the file back with
/// the result; `None` when the runtime is going away.
async fn blocking<T: Send + 'static>(
    mut file: AuditFile,
    work: impl FnOnce(&mut AuditFile) -> T + Send + 'static,
) -> Option<(AuditFile, T)> {
    tokio::task::spawn_blocking(move || {
        let result = work(&mut file);
        (file, result)
    })
    .await
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientConfig, ClientIdentity};

    fn call(client: &str) -> Call {
        Call::begin(
            client,
            "unix",
            Target::App("shop".into()),
            &http::Method::GET,
            "/cgi-bin/openapi/quota/get".into(),
        )
    }

    fn ok() -> Verdict {
        Verdict::answered(&Reply::new(200, Some(0), Some("ok")))
    }

    fn clients() -> Arc<ArcSwap<Clients>> {
        Arc::new(ArcSwap::from_pointee(Clients::new(&[ClientConfig {
            name: "orders".into(),
            identity: ClientIdentity::Uid(1001),
            apps: vec!["shop".into()],
            platforms: Vec::new(),
            suites: Vec::new(),
            apis: None,
            admin: false,
        }])))
    }

    fn series(metrics: &Metrics, name: &str) -> String {
        String::from_utf8(metrics.render())
            .unwrap()
            .lines()
            .filter(|line| line.starts_with(name))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let metrics = Metrics::new();
        let (queue, _undrained) = mpsc::channel(2);
        let auditor = Auditor {
            queue,
            metrics: AuditMetrics::new(&metrics),
            clients: clients(),
        };
        for _ in 0..5 {
            auditor.finish(call("orders"), ok());
        }
        assert_eq!(auditor.metrics.dropped.get(), 3);
        assert!(series(&metrics, "wxbroker_proxied_calls_total")
            .contains(r#"{app="shop",client="orders",outcome="ok"} 5"#));
    }

    #[tokio::test]
    async fn only_configured_clients_become_labels() {
        let metrics = Metrics::new();
        let (queue, _undrained) = mpsc::channel(8);
        let auditor = Auditor {
            queue,
            metrics: AuditMetrics::new(&metrics),
            clients: clients(),
        };
        auditor.finish(call("uid-4242"), ok());
        auditor.finish(call("unknown"), Verdict::unanswered(Outcome::Refused));
        let text = series(&metrics, "wxbroker_proxied_calls_total");
        assert!(
            text.contains(r#"{app="shop",client="unknown",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"{app="shop",client="unknown",outcome="refused"} 1"#));
        assert!(!text.contains("uid-4242"));
    }

    #[tokio::test]
    async fn the_writer_writes_what_is_queued_and_stops_after_the_drain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (tasks, cancel) = (TaskTracker::new(), CancellationToken::new());
        let (auditor, _control) = spawn(
            AuditSettings {
                file: Some(path.clone()),
                max_bytes: 1 << 20,
            },
            &Metrics::new(),
            clients(),
            &tasks,
            &cancel,
            Duration::from_millis(200),
        );
        for _ in 0..10 {
            auditor.finish(call("orders"), ok());
        }
        // A connection still draining keeps its Auditor: the writer stops
        // at the drain's end all the same, with every record written.
        cancel.cancel();
        tasks.close();
        tokio::time::timeout(Duration::from_secs(10), tasks.wait())
            .await
            .expect("the writer stops after the drain");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 10, "{text}");
        drop(auditor);
    }

    #[tokio::test]
    async fn a_reload_moves_the_records_to_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
        let (tasks, cancel) = (TaskTracker::new(), CancellationToken::new());
        let settings = |file: &PathBuf| AuditSettings {
            file: Some(file.clone()),
            max_bytes: 1 << 20,
        };
        let (auditor, control) = spawn(
            settings(&first),
            &Metrics::new(),
            clients(),
            &tasks,
            &cancel,
            Duration::from_secs(5),
        );
        auditor.finish(call("orders"), ok());
        let lines =
            |path: &PathBuf| std::fs::read_to_string(path).map_or(0, |text| text.lines().count());
        tokio::time::timeout(Duration::from_secs(10), async {
            while lines(&first) < 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the first record is written");
        control.apply(settings(&second));
        auditor.finish(call("orders"), ok());
        drop(auditor);
        tasks.close();
        tokio::time::timeout(Duration::from_secs(10), tasks.wait())
            .await
            .expect("the writer stops once every auditor is gone");
        assert_eq!((lines(&first), lines(&second)), (1, 1));
    }
}
