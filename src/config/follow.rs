//! `[[apps]] follow`, `follow_credential_file`, `follow_ca_file`
//! (DESIGN.md section 15): an app whose credentials another broker, its
//! leader, owns. A follower has no secret and never calls WeChat for the
//! app; it reads the leader's remote listener instead.

use std::path::PathBuf;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::error::Problem;
use super::secrets::{checked_secret, looks_like_secret, read_secret_file};
use super::urls;
use crate::secret::Secret;

/// Where a follower app reads its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowConfig {
    /// The leader's remote listener, `https://host[:port]`, without a
    /// trailing slash. Plain `http://` only for a loopback leader.
    pub url: String,
    /// The bearer credential sent to the leader (from the file).
    pub credential: Secret,
    pub credential_file: PathBuf,
    /// A PEM CA the leader's certificate is checked against, besides the
    /// public roots (for a private CA).
    pub ca_file: Option<PathBuf>,
}

/// The as-written follow keys of one app.
pub(super) struct RawFollow {
    pub url: Option<String>,
    pub credential_file: Option<String>,
    pub ca_file: Option<String>,
}

/// The app's follow settings, or `None` for an app the broker owns.
/// `secret_keys` names the secret keys the app sets: a follower has none,
/// since the leader alone holds the secret.
pub(super) fn follow(
    key: &dyn Fn(&str) -> String,
    raw: RawFollow,
    secret_keys: &[&str],
) -> Result<Option<FollowConfig>, Problem> {
    let Some(url) = raw.url else {
        for (name, set) in [
            ("follow_credential_file", raw.credential_file.is_some()),
            ("follow_ca_file", raw.ca_file.is_some()),
        ] {
            if set {
                return Err(Problem::new(key(name), "applies only with follow"));
            }
        }
        return Ok(None);
    };
    if let Some(secret_key) = secret_keys.first() {
        return Err(Problem::new(
            key(secret_key),
            "a follower app has no secret: its leader owns the credentials (remove this key or follow)",
        ));
    }
    let url = leader_url(&key("follow"), &url)?;
    let credential_key = key("follow_credential_file");
    let credential_file = raw
        .credential_file
        .filter(|file| !file.is_empty())
        .ok_or_else(|| {
            Problem::new(
                &credential_key,
                "required with follow (a file holding the bearer credential for the leader)",
            )
        })?;
    let shown = if looks_like_secret(&credential_file) {
        "the file (its name looks like a secret, so it is not shown)".to_owned()
    } else {
        credential_file.clone()
    };
    let credential_file = PathBuf::from(credential_file);
    let text = read_secret_file(&credential_key, &credential_file, &shown)?;
    let credential = checked_secret(&credential_key, &format!("the credential in {shown}"), text)?;
    let ca_file = raw
        .ca_file
        .map(|file| ca_file(&key("follow_ca_file"), file))
        .transpose()?;
    Ok(Some(FollowConfig {
        url,
        credential,
        credential_file,
        ca_file,
    }))
}

/// `https://host[:port]`: no userinfo, path, query or fragment, since the
/// follower appends the API's paths itself. `http://` is refused except
/// for a loopback host: the bearer credential and the tokens would cross
/// the network in clear.
fn leader_url(key: &str, value: &str) -> Result<String, Problem> {
    let shown = urls::masked(value);
    let parsed = url::Url::parse(value.trim())
        .map_err(|err| Problem::new(key, format!("\"{shown}\" is not a URL: {err}")))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| Problem::new(key, format!("\"{shown}\" names no host")))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Problem::new(
            key,
            format!(
                "\"{shown}\" carries a user name or password; the credential goes in \
                 follow_credential_file"
            ),
        ));
    }
    if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(Problem::new(
            key,
            format!("\"{shown}\" must be only https://host[:port], without a path or query"),
        ));
    }
    match parsed.scheme() {
        "https" => {}
        "http" if is_loopback_host(host) => {}
        "http" => {
            return Err(Problem::new(
                key,
                format!(
                    "\"{shown}\" must use https: the bearer credential and the tokens would \
                     cross the network in clear (http is allowed for a loopback leader only)"
                ),
            ))
        }
        other => {
            return Err(Problem::new(
                key,
                format!("\"{shown}\": the scheme \"{other}\" is not https"),
            ))
        }
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// A PEM file holding at least one certificate.
fn ca_file(key: &str, file: String) -> Result<PathBuf, Problem> {
    if file.is_empty() {
        return Err(Problem::new(key, "must not be empty"));
    }
    let path = PathBuf::from(file);
    let certificates = CertificateDer::pem_file_iter(&path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| Problem::new(key, format!("cannot read {}: {err}", path.display())))?;
    if certificates.is_empty() {
        return Err(Problem::new(
            key,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_urls_are_https_or_loopback_http() {
        assert_eq!(
            leader_url("k", "https://prod.internal:8943/").unwrap(),
            "https://prod.internal:8943"
        );
        assert!(leader_url("k", "http://127.0.0.1:8943").is_ok());
        assert!(leader_url("k", "http://localhost:8943").is_ok());
        for bad in [
            "http://prod.internal:8943",
            "https://u:p@prod.internal",
            "https://prod.internal/v1",
            "https://prod.internal?x=1",
            "ftp://prod.internal",
            "prod.internal:8943",
        ] {
            let err = leader_url("apps.shop.follow", bad).unwrap_err();
            assert!(!format!("{err:?}").contains(":p@"), "{bad}: {err:?}");
        }
    }
}
