//! The leader and the protocol spoken with it: a client built like the
//! upstream one (no redirects, no `Referer`), the watch (a long poll the
//! leader answers once its credential differs from the held one), the
//! forwarded invalidation, and the reading of an answer: a redirect is
//! never followed, a body is bounded, an error body gives its code.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::answer::{shown, LeaderAnswer, Refused};
use crate::config::FollowConfig;
use crate::errors::Chain;
use crate::secret::{AccessToken, Secret};

/// How long the leader may hold a watch before answering unchanged.
const WATCH_SECS: u64 = 25;
/// A watch's whole exchange: the leader's wait and a margin for the answer.
const WATCH_TIMEOUT: Duration = Duration::from_secs(WATCH_SECS + 10);
/// Reads and invalidations: as long as a leader may take to refresh.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A credential answer is a few hundred bytes.
const MAX_ANSWER: usize = 64 * 1024;

/// A follower app's leader: where it is, and the client that reaches it.
pub(in crate::engine) struct Leader {
    url: String,
    credential: Secret,
    /// `Err` when the client could not be built (an unreadable CA file
    /// after validation): every exchange then fails with this cause.
    http: Result<reqwest::Client, String>,
}

impl Leader {
    pub(in crate::engine) fn new(follow: &FollowConfig) -> Arc<Leader> {
        Arc::new(Leader {
            url: follow.url.clone(),
            credential: follow.credential.clone(),
            http: leader_client(follow),
        })
    }

    /// Where the leader is, for log lines.
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// Sends `reported` to the leader at `path`, in the answer field
    /// `field`; the leader refreshes only if it is still its current
    /// credential, and answers with the one it holds.
    pub(super) async fn invalidate(
        &self,
        path: Result<String, Refused>,
        field: &str,
        reported: &AccessToken,
    ) -> Result<LeaderAnswer, Refused> {
        let body = serde_json::json!({ field: reported.expose() });
        match (&self.http, path) {
            (Ok(http), Ok(path)) => {
                let url = format!("{}{path}/invalidate", self.url);
                let request = http
                    .post(url)
                    .bearer_auth(self.credential.expose())
                    .timeout(CALL_TIMEOUT)
                    .json(&body);
                receive(request).await
            }
            (Err(cause), _) => Err(Refused(cause.clone())),
            (_, Err(refused)) => Err(refused),
        }
    }
}

/// Built like the upstream client (no redirects, no `Referer`), trusting
/// the public roots and the configured private CA.
fn leader_client(follow: &FollowConfig) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("wxbroker/", env!("CARGO_PKG_VERSION"), " follower"))
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(ca_file) = &follow.ca_file {
        let pem = std::fs::read(ca_file).map_err(|err| {
            format!(
                "cannot read follow_ca_file {}: {}",
                ca_file.display(),
                Chain(&err)
            )
        })?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|err| format!("follow_ca_file {}: {}", ca_file.display(), Chain(&err)))?;
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .build()
        .map_err(|err| format!("cannot build the client for the leader: {}", Chain(&err)))
}

/// The leader's error body, for its code.
#[derive(Deserialize)]
struct ErrorAnswer {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

/// One watch: at `at`, ask the leader for the credential once it differs
/// from `held` (at once without one).
pub(super) async fn watch(
    leader: Arc<Leader>,
    path: Result<String, Refused>,
    held: Option<String>,
    at: Instant,
) -> Result<LeaderAnswer, Refused> {
    tokio::time::sleep_until(at).await;
    let path = path?;
    let http = leader
        .http
        .as_ref()
        .map_err(|cause| Refused(cause.clone()))?;
    let mut request = http
        .get(format!("{}{path}", leader.url))
        .bearer_auth(leader.credential.expose());
    request = match &held {
        Some(version) => request
            .query(&[("wait_change_from", version.as_str())])
            .query(&[("timeout", WATCH_SECS)])
            .timeout(WATCH_TIMEOUT),
        None => request.timeout(CALL_TIMEOUT),
    };
    receive(request).await
}

/// Sends `request` and reads a credential answer, refusing anything else.
async fn receive(request: reqwest::RequestBuilder) -> Result<LeaderAnswer, Refused> {
    let response = request
        .send()
        .await
        .map_err(|err| Refused(format!("cannot reach the leader: {}", Chain(&err))))?;
    let status = response.status();
    if status.is_redirection() {
        return Err(Refused(format!(
            "the leader answered a redirect ({status}); redirects are never followed"
        )));
    }
    let body = read_limited(response).await?;
    if !status.is_success() {
        let cause = match serde_json::from_slice::<ErrorAnswer>(&body) {
            Ok(ErrorAnswer { error }) => format!(
                "the leader answered {status} {}: {}",
                shown(&error.code),
                shown(&error.message)
            ),
            Err(_) => format!("the leader answered {status}"),
        };
        return Err(Refused(cause));
    }
    serde_json::from_slice(&body).map_err(|err| {
        Refused(format!(
            "the leader's answer is not a credential answer: {}",
            Chain(&err)
        ))
    })
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, Refused> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| Refused(format!("the leader's answer broke off: {}", Chain(&err))))?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(Refused(format!(
                "the leader's answer is larger than {MAX_ANSWER} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
