//! Turns the raw, as-written configuration into a [`Config`]: fills in
//! defaults, resolves secrets, and refuses anything the daemon could not run
//! with. Each section has its validator (`server`, `remote`, `store` with
//! `redis`, `log`, `upstream`, `apps`; platforms, suites and clients in
//! their own modules beside this one), and each key type one reading
//! (`fields`), so a rule (and its message) is written once. This module
//! only calls them in order and checks what lies between sections.
//!
//! Errors are [`Problem`]s (key + message); the caller attaches the source
//! name. Messages never contain a secret, and not the values of
//! `secret_env`/`secret_file` either when those look like a pasted secret.

mod apps;
mod log;
mod redis;
mod remote;
mod server;
mod store;
mod upstream;

use super::error::Problem;
use super::fields::Env;
use super::raw::RawConfig;
use super::{clients, platforms, self_calls, suites, Config};

pub(crate) fn config(source: &str, raw: RawConfig, env: Env<'_>) -> Result<Config, Problem> {
    let server = server::server(raw.server)?;
    let platforms = platforms::platforms(raw.platforms.unwrap_or_default(), env)?;
    let suites = suites::suites(raw.suites.unwrap_or_default(), env)?;
    let raw_apps = raw.apps.unwrap_or_default();
    // A broker may own platforms or suites alone; with none of the three,
    // it has nothing to do.
    let apps = if raw_apps.is_empty() && !(platforms.is_empty() && suites.is_empty()) {
        Vec::new()
    } else {
        apps::apps(raw_apps, env)?
    };
    server::compat_listeners(&server, &apps)?;
    let store = store::store(raw.store.unwrap_or_default(), env)?;
    redis::lock_fits(&store, &apps)?;
    let suite_names: Vec<&str> = suites.iter().map(|s| s.name.as_str()).collect();
    let owners = clients::Owners {
        apps: &apps,
        platforms: &platforms,
        suites: &suite_names,
    };
    let clients = clients::clients(
        raw.clients.unwrap_or_default(),
        &owners,
        server.remote_listen,
    )?;
    platforms::callback_listener(&server, &platforms, !suites.is_empty())?;
    suites::callback_listener(&server, &suites)?;
    let log = log::log(raw.log.unwrap_or_default())?;
    let upstream = upstream::upstream(raw.upstream.unwrap_or_default())?;
    self_calls::upstreams_avoid(
        &upstream,
        &apps,
        &platforms,
        &suites,
        &self_calls::configured_listeners(&server, &apps),
    )?;
    Ok(Config {
        source: source.to_owned(),
        server,
        store,
        log,
        upstream,
        apps,
        clients,
        platforms,
        suites,
    })
}
