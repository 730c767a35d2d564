//! `[store]` for backend `redis`: the URL (one Redis, Sentinel, Cluster),
//! its password from `password_env` or `password_file`, a private CA for
//! TLS, and the rule that a refresh lock must fit in each app's refresh
//! window (DESIGN.md section 14). Messages never show a password.

use std::path::PathBuf;

use humantime::format_duration;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::config::error::Problem;
use crate::config::fields::Env;
use crate::config::fleet_lock::{fleet_refresh_window, lock_hold, LOCK_LEASE};
use crate::config::redis_target::RedisTarget;
use crate::config::secrets::{env_secret, looks_like_secret, read_secret_file};
use crate::config::{AppConfig, RedisConfig, SecretSource, StoreBackend, StoreConfig};
use crate::secret::Secret;

pub(super) fn redis(
    url: String,
    password_env: Option<String>,
    password_file: Option<String>,
    ca_file: Option<String>,
    env: Env<'_>,
) -> Result<RedisConfig, Problem> {
    let url = url.trim().to_owned();
    let target = RedisTarget::parse(&url).map_err(|message| Problem::new("store.url", message))?;
    let password = match (password_env, password_file) {
        (Some(_), Some(_)) => {
            return Err(Problem::new(
                "store",
                "set at most one of password_env or password_file (both are set)",
            ))
        }
        (Some(name), None) => {
            let key = "store.password_env";
            let value = env_secret(key, &name, env)?;
            let described = format!("the password in environment variable {name}");
            Some((password(key, &described, &value)?, SecretSource::Env(name)))
        }
        (None, Some(file)) => {
            let key = "store.password_file";
            let shown = if looks_like_secret(&file) {
                "the file (its name looks like a secret, so it is not shown)".to_owned()
            } else {
                file.clone()
            };
            let path = PathBuf::from(file);
            let value = read_secret_file(key, &path, &shown)?;
            let described = format!("the password in {shown}");
            Some((password(key, &described, &value)?, SecretSource::File(path)))
        }
        (None, None) => None,
    };
    if let Some((_, from)) = &password {
        if target.password.is_some() {
            let key = match from {
                SecretSource::File(_) => "store.password_file",
                _ => "store.password_env",
            };
            return Err(Problem::new(
                key,
                "store.url holds a password too; keep it in one place (remove it from the URL)",
            ));
        }
    }
    let ca_file = ca_file
        .map(|file| {
            if !target.tls {
                return Err(Problem::new(
                    "store.ca_file",
                    "applies only to TLS URLs (rediss://, rediss+sentinel://, rediss+cluster://)",
                ));
            }
            let path = PathBuf::from(file);
            let certificates = CertificateDer::pem_file_iter(&path)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|err| {
                    Problem::new(
                        "store.ca_file",
                        format!("cannot read {}: {err}", path.display()),
                    )
                })?;
            if certificates.is_empty() {
                return Err(Problem::new(
                    "store.ca_file",
                    format!("{} holds no PEM certificate", path.display()),
                ));
            }
            Ok(path)
        })
        .transpose()?;
    Ok(RedisConfig {
        url,
        target,
        password,
        ca_file,
    })
}

/// A Redis password: the trailing newline `echo` adds dropped, and no
/// other control characters (they would break the AUTH command).
fn password(key: &str, described: &str, value: &str) -> Result<Secret, Problem> {
    let trimmed = value.trim_end_matches(['\r', '\n']);
    if trimmed.is_empty() {
        return Err(Problem::new(key, format!("{described} is empty")));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(Problem::new(
            key,
            format!("{described} contains control characters"),
        ));
    }
    Ok(Secret::new(trimmed))
}

/// In a fleet, a broker holding the refresh lock may keep it for
/// [`lock_hold`]; if it dies then, the lock lapses a lease later and the
/// next broker needs one fetch. All of that must fit before expiry, or
/// readers go without a token.
pub(super) fn lock_fits(store: &StoreConfig, apps: &[AppConfig]) -> Result<(), Problem> {
    if !matches!(store.backend, StoreBackend::Redis(_)) {
        return Ok(());
    }
    for app in apps {
        let needed = fleet_refresh_window(app.fetch_timeout);
        if app.refresh_before < needed {
            return Err(Problem::new(
                format!("apps.{}.refresh_before", app.name),
                format!(
                    "with backend \"redis\" must be at least {} for fetch_timeout = \"{}\": \
                     a broker may hold the fleet's refresh lock {} (2 × fetch_timeout + 1s), \
                     the lock lapses {} after a holder dies, and the next broker needs one \
                     fetch_timeout; raise refresh_before or lower fetch_timeout",
                    format_duration(needed),
                    format_duration(app.fetch_timeout),
                    format_duration(lock_hold(app.fetch_timeout)),
                    format_duration(LOCK_LEASE),
                ),
            ));
        }
    }
    Ok(())
}
