//! `wxbroker probe`: asks a running broker for `/readyz` or `/livez` and
//! succeeds on 200 (for health checks).

use http::Method;
use wxbroker::cli::ProbeArgs;
use wxbroker::client::{self, Target};

pub async fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let target = match args.socket {
        Some(path) => Target::Unix(path),
        None => {
            let base = args.url.trim_end_matches('/');
            let rest = base.strip_prefix("http://").unwrap_or(base);
            if rest.contains('/') {
                anyhow::bail!(
                    "--url takes the broker's base URL, such as http://127.0.0.1:9930; \
                     name the endpoint as an argument (readyz or livez)"
                );
            }
            Target::Tcp(base.to_owned())
        }
    };
    let path = args.endpoint.path();
    let reply = client::send(
        &target,
        Method::GET,
        path,
        "wxbroker-probe",
        None,
        args.timeout,
    )
    .await?;
    let body = String::from_utf8_lossy(&reply.body);
    if reply.status == http::StatusCode::OK {
        println!("{path}: {}", body.trim_end());
        return Ok(());
    }
    anyhow::bail!(
        "{path} at {target} answered {}: {}",
        reply.status,
        body.trim_end()
    )
}
