//! TLS for the WeChat-compatible listeners (DESIGN.md section 12): the
//! server configuration built from `[server.compat_tls]`, and
//! `wxbroker tls init`, which makes a local CA and a certificate for
//! WeChat's API hosts so an SDK that forces `https://` (or that has
//! WeChat's URL written in) can be pointed at the broker unchanged.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::files::write_atomically;

/// The names `tls init` certifies: WeChat's API hosts, and loopback for
/// SDKs pointed at the listener by address.
pub const CERTIFIED_NAMES: [&str; 3] = ["api.weixin.qq.com", "qyapi.weixin.qq.com", "localhost"];

/// What `tls init` writes in its directory.
pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";

/// How long the generated certificates are valid: long enough not to
/// expire under a running service, short enough to be re-issued.
const VALIDITY_DAYS: i64 = 825;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {key} {path}")]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{key} {path} holds no certificate")]
    NoCertificate { key: &'static str, path: PathBuf },
    #[error("the certificate and key are not usable together")]
    Rustls(#[source] rustls::Error),
    #[error("cannot generate the certificates")]
    Generate(#[source] rcgen::Error),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The rustls server configuration for `cert_file` (a PEM chain, leaf
/// first) and `key_file` (a PEM private key), speaking HTTP/1.1.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config_for(
        cert_file,
        key_file,
        ("server.compat_tls.cert_file", "server.compat_tls.key_file"),
    )
}

/// [`server_config`] for a listener whose files are set by `keys` (the
/// cert's and the key's), which errors name.
pub fn server_config_for(
    cert_file: &Path,
    key_file: &Path,
    keys: (&'static str, &'static str),
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Read {
            key: keys.0,
            path: cert_file.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            key: keys.0,
            path: cert_file.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::Read {
        key: keys.1,
        path: key_file.to_path_buf(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Rustls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The files [`init`] wrote.
#[derive(Debug)]
pub struct Issued {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes a new local CA (`ca.pem`) and a certificate for
/// [`CERTIFIED_NAMES`] and 127.0.0.1 signed by it (`cert.pem`, with its
/// key in `key.pem`, mode 0600) into `dir`, created 0755 if missing. The
/// CA's own key is never written: nothing else can ever be signed with a
/// CA the service was told to trust. Running it again re-issues both.
pub fn init(dir: &Path) -> Result<Issued, TlsError> {
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Write { path, source }
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(write_error(dir))?;
    let now = time::OffsetDateTime::now_utc();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(TlsError::Generate)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.distinguished_name = named("wxbroker local CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = now - time::Duration::days(1);
    ca_params.not_after = now + time::Duration::days(VALIDITY_DAYS);
    let ca_key = KeyPair::generate().map_err(TlsError::Generate)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(TlsError::Generate)?;

    let names: Vec<String> = CERTIFIED_NAMES
        .iter()
        .map(|name| (*name).to_owned())
        .collect();
    let mut leaf_params = CertificateParams::new(names).map_err(TlsError::Generate)?;
    leaf_params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    leaf_params.distinguished_name = named(CERTIFIED_NAMES[0]);
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.not_before = ca_params.not_before;
    leaf_params.not_after = ca_params.not_after;
    let leaf_key = KeyPair::generate().map_err(TlsError::Generate)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_cert = leaf_params
        .signed_by(&leaf_key, &issuer)
        .map_err(TlsError::Generate)?;

    let issued = Issued {
        ca: dir.join(CA_FILE),
        cert: dir.join(CERT_FILE),
        key: dir.join(KEY_FILE),
    };
    // The key first: a certificate on disk without its key is useless,
    // the reverse is harmless.
    for (path, pem, mode) in [
        (&issued.key, leaf_key.serialize_pem(), 0o600),
        (&issued.cert, leaf_cert.pem(), 0o644),
        (&issued.ca, ca_cert.pem(), 0o644),
    ] {
        write_atomically(path, pem.as_bytes(), mode).map_err(|err| TlsError::Write {
            path: path.clone(),
            source: err.source,
        })?;
    }
    // A key left by an earlier run with wider bits must not stay readable.
    let _ = fs::set_permissions(
        &issued.key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    );
    Ok(issued)
}

fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "wxbroker");
    name
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn init_writes_a_ca_and_a_usable_certificate_with_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let issued = init(&dir.path().join("tls")).unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&issued.key), 0o600);
        assert_eq!(mode(&issued.ca), 0o644);
        assert!(fs::read_to_string(&issued.ca)
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
        server_config(&issued.cert, &issued.key).expect("rustls takes what init wrote");
        let files: Vec<_> = fs::read_dir(dir.path().join("tls"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files.len(), 3, "no CA key kept: {files:?}");
    }

    #[test]
    fn unreadable_files_name_the_key() {
        let err = server_config(Path::new("/nonexistent/cert.pem"), Path::new("/x")).unwrap_err();
        assert!(
            err.to_string().contains("server.compat_tls.cert_file"),
            "{err}"
        );
    }
}
