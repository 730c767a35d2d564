//! `wxbroker tls init`: writes a local CA and a certificate signed by it,
//! and says how to use them.

use std::path::Path;

/// Writes the files into `dir` and prints what was written and what to
/// do with it.
pub fn init(dir: &Path) -> anyhow::Result<()> {
    let issued = wxbroker::tls::init(dir)?;
    println!("wrote {}", issued.ca.display());
    println!("wrote {}", issued.cert.display());
    println!("wrote {} (mode 0600)", issued.key.display());
    println!();
    println!("serve the compatible listeners over TLS:");
    println!("  [server.compat_tls]");
    println!("  cert_file = \"{}\"", issued.cert.display());
    println!("  key_file = \"{}\"", issued.key.display());
    println!(
        "and make the service trust {} (REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS, ...).",
        issued.ca.display()
    );
    Ok(())
}
