//! `[store]`: the backend (memory, a state directory, Redis) and the
//! key prefix; a key of another backend is refused rather than ignored.

use super::redis;
use crate::config::error::Problem;
use crate::config::fields::{choice, path, word, Env};
use crate::config::raw::RawStore;
use crate::config::{StoreBackend, StoreConfig};

const DEFAULT_KEY_PREFIX: &str = "wxbroker";

#[derive(Clone, Copy)]
enum BackendKind {
    Memory,
    File,
    Redis,
}

pub(super) fn store(raw: RawStore, env: Env<'_>) -> Result<StoreConfig, Problem> {
    let kind = choice(
        "store.backend",
        raw.backend.as_deref(),
        BackendKind::Memory,
        &[
            ("memory", BackendKind::Memory),
            ("file", BackendKind::File),
            ("redis", BackendKind::Redis),
        ],
    )?;
    let path = path("store.path", raw.path)?;
    let url = raw.url;
    let redis_only = [
        ("store.url", url.is_some()),
        ("store.password_env", raw.password_env.is_some()),
        ("store.password_file", raw.password_file.is_some()),
        ("store.ca_file", raw.ca_file.is_some()),
    ];
    let backend = match kind {
        BackendKind::Memory => {
            only_with("store.path", path.is_some(), "file")?;
            for (key, set) in redis_only {
                only_with(key, set, "redis")?;
            }
            StoreBackend::Memory
        }
        BackendKind::File => {
            for (key, set) in redis_only {
                only_with(key, set, "redis")?;
            }
            let path = path.ok_or_else(|| {
                Problem::new(
                    "store.path",
                    "required with backend \"file\" (a state directory)",
                )
            })?;
            StoreBackend::File { path }
        }
        BackendKind::Redis => {
            only_with("store.path", path.is_some(), "file")?;
            let url =
                url.ok_or_else(|| Problem::new("store.url", "required with backend \"redis\""))?;
            StoreBackend::Redis(redis::redis(
                url,
                raw.password_env,
                raw.password_file,
                raw.ca_file,
                env,
            )?)
        }
    };
    let key_prefix =
        word("store.key_prefix", raw.key_prefix)?.unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
    Ok(StoreConfig {
        backend,
        key_prefix,
    })
}

/// A key that belongs to another backend is refused rather than ignored: the
/// operator likely meant to use that backend.
fn only_with(key: &str, set: bool, backend: &str) -> Result<(), Problem> {
    if set {
        return Err(Problem::new(
            key,
            format!("applies only to backend \"{backend}\"; set store.backend or remove this key"),
        ));
    }
    Ok(())
}
