//! A reload (SIGHUP) of the running daemon: the apps reconciled (their
//! sources and sinks made as at start), the `[[clients]]` and audit
//! settings put in force at once, and a change to anything bound at start
//! logged as waiting for a restart.

use std::sync::Arc;

use tracing::{info, warn};

use super::{app_sources, spawn_sink, Daemon};
use crate::audit::AuditSettings;
use crate::config::{self, Config};
use crate::engine;
use crate::identity::Clients;

impl Daemon {
    /// Applies a new configuration's apps (SIGHUP): new apps start, removed
    /// ones stop, changed ones restart (keeping their token when appid,
    /// kind and grant are unchanged, so a changed secret is used from the
    /// next fetch), unchanged ones are left alone. `[log] audit_file` and
    /// `audit_max_bytes` apply at once (the audit file is reopened). Listener,
    /// store, log format and level, and platform settings need a restart; a
    /// change to them is logged and ignored.
    ///
    /// Returns once every stopped refresher has ended: a fetch one had
    /// begun is waited for (at most its `fetch_timeout`) and stored.
    ///
    /// `[[clients]]` take effect at once: a client removed, or whose
    /// credential or apps changed, has its open watches ended.
    ///
    /// A configuration whose `api_base` or `connect_to` reaches one of the
    /// daemon's own listeners is refused whole: nothing changes.
    pub async fn reload(&self, config: &Config) -> Result<engine::Reconciled, config::ConfigError> {
        config.check_upstreams_avoid(&self.own_listeners)?;
        {
            let running = self.running.lock().expect("running config poisoned");
            let fixed = [
                ("[server]", config.server != running.server),
                ("[store]", config.store != running.store),
                (
                    "[log] format and level",
                    (&config.log.format, &config.log.level)
                        != (&running.log.format, &running.log.level),
                ),
                ("[upstream]", config.upstream != running.upstream),
                (
                    "[[apps]] compat_listen",
                    compat_listeners(config) != compat_listeners(&running),
                ),
                ("[[platforms]]", config.platforms != running.platforms),
                ("[[suites]]", config.suites != running.suites),
            ];
            for (section, changed) in fixed {
                if changed {
                    warn!(
                        section,
                        "reload: changes to this section take effect after a restart"
                    );
                }
            }
        }
        let report = self.broker.reconcile(app_sources(config, &self.http)).await;
        self.apply_clients(&config.clients);
        self.audit.apply(AuditSettings::of(&config.log));
        let mut sinks = self.sinks.lock().expect("sink list poisoned");
        let gone = |name: &str| {
            report
                .removed
                .iter()
                .chain(&report.restarted)
                .any(|gone| gone == name)
        };
        sinks.retain(|sink| !gone(sink.app()));
        for name in report.added.iter().chain(&report.restarted) {
            if let Some(sink) = self
                .broker
                .app(name)
                .and_then(|app| spawn_sink(&app, &self.tasks))
            {
                sinks.push(sink);
            }
        }
        {
            let mut running = self.running.lock().expect("running config poisoned");
            running.apps = config.apps.clone();
            running.log.audit_file = config.log.audit_file.clone();
            running.log.audit_max_bytes = config.log.audit_max_bytes;
        }
        info!(
            added = ?report.added,
            restarted = ?report.restarted,
            removed = ?report.removed,
            unchanged = ?report.kept,
            "configuration reloaded"
        );
        Ok(report)
    }

    /// Puts `clients` in force, then ends the watches of every client
    /// that is gone or changed: after this, no request or watch of a
    /// revoked client is answered.
    fn apply_clients(&self, clients: &[config::ClientConfig]) {
        self.clients.store(Arc::new(Clients::new(clients)));
        let mut running = self.running.lock().expect("running config poisoned");
        let revoked: Vec<&str> = running
            .clients
            .iter()
            .filter(|old| !clients.contains(old))
            .map(|old| old.name.as_str())
            .collect();
        if !revoked.is_empty() {
            info!(clients = ?revoked, "reload: ending the watches of removed or changed clients");
            self.watches.revoke(revoked.iter().copied());
        }
        running.clients = clients.to_vec();
    }
}

/// Each app's own compatible listener: bound at start only.
fn compat_listeners(config: &Config) -> Vec<(&str, std::net::SocketAddr)> {
    config
        .apps
        .iter()
        .filter_map(|app| Some((app.name.as_str(), app.compat_listen?)))
        .collect()
}
