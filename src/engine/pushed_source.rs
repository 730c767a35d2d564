//! The source of a credential fetched with a secret and a ticket that
//! upstream pushes to the broker: the Open Platform's component token
//! (with the `component_verify_ticket`) and WeCom's suite token (with the
//! `suite_ticket`). A kind of this shape declares its endpoint as data, a
//! [`PushedTicketShape`], and writes no source of its own.
//!
//! Without a valid ticket the source makes no call and spends nothing: it
//! asks upstream to push one where upstream can be asked (at most once
//! per [`PUSH_REQUEST_INTERVAL`]) and waits a while for the push. A
//! ticket upstream refuses is dropped, never read back from the store,
//! and a new push is asked for.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::clock::Clock;
use crate::errors::Chain;
use crate::secret::{AccessToken, Secret};
use crate::store::{implausible_times, StoreError};
use crate::wechat::{FetchError, TokenGrant, TokenSource, MAX_LIFETIME_SECS};

/// Upstream pushes a ticket every 10 minutes anyway; asking more often
/// than that only burns the call.
pub const PUSH_REQUEST_INTERVAL: Duration = Duration::from_secs(600);

/// How one credential is asked for with a secret and a pushed ticket:
/// `POST {api_base}{token_path}` with `{id_field, secret_field,
/// ticket_field}`, answered `{value_field, "expires_in"}`.
#[derive(Debug)]
pub struct PushedTicketShape {
    /// The ticket's name, in log lines and errors.
    pub ticket: &'static str,
    /// How long a pushed ticket is good for after its push.
    pub ticket_lifetime: Duration,
    pub token_path: &'static str,
    pub id_field: &'static str,
    pub secret_field: &'static str,
    pub ticket_field: &'static str,
    /// The answer's field that holds the credential.
    pub value_field: &'static str,
    /// The errcodes by which upstream refuses the ticket (expired or
    /// invalid).
    pub ticket_rejected: &'static [i64],
    /// How upstream is asked to push a ticket now, if it can be.
    pub push_request: Option<PushRequest>,
}

/// `POST {api_base}{path}` with `{id_field, secret_field}`: asks upstream
/// to push a ticket now.
#[derive(Debug)]
pub struct PushRequest {
    pub path: &'static str,
    pub id_field: &'static str,
    pub secret_field: &'static str,
}

impl PushedTicketShape {
    /// The body of the credential's request.
    fn token_body(&self, id: &str, secret: &Secret, ticket: &str) -> Value {
        json!({
            self.id_field: id,
            self.secret_field: secret.expose(),
            self.ticket_field: ticket,
        })
    }

    /// The credential in a successful answer (its errcode checked), its
    /// lifetime clamped like every other.
    fn grant(&self, answer: &Map<String, Value>) -> Result<TokenGrant, FetchError> {
        let value = answer.get(self.value_field).and_then(Value::as_str);
        let expires_in = answer.get("expires_in").and_then(Value::as_u64);
        match (value, expires_in) {
            (Some(value), Some(expires_in)) if !value.is_empty() && expires_in > 0 => {
                Ok(TokenGrant {
                    token: AccessToken::new(value),
                    expires_in: expires_in.min(MAX_LIFETIME_SECS),
                })
            }
            _ => Err(FetchError::Malformed(format!(
                "answer has no {} or expires_in",
                self.value_field
            ))),
        }
    }
}

/// The latest pushed ticket, as this broker knows it: `None` when there
/// is none, or upstream refused the one there was. The callback that
/// receives a push sends it here.
pub type TicketCell = watch::Sender<Option<Arc<str>>>;

/// A pushed ticket as the store keeps it.
pub struct KeptTicket {
    pub ticket: String,
    /// Unix seconds.
    pub received_at: u64,
}

/// Where the last pushed ticket is kept: another broker of a fleet may
/// have received the push, and a restart must not lose it.
pub trait TicketKeeper: Send + Sync + 'static {
    fn load_ticket(&self) -> BoxFuture<'_, Result<Option<KeptTicket>, StoreError>>;
}

/// Who asks, and where: the id and secret a [`PushedTicketShape`] sends.
pub struct PushedTicketCaller {
    pub http: reqwest::Client,
    /// Without a trailing slash.
    pub api_base: String,
    pub id: String,
    pub secret: Secret,
    /// The bound on one call.
    pub timeout: Duration,
}

/// One credential of the pushed-ticket shape.
pub struct PushedTicketSource {
    shape: &'static PushedTicketShape,
    caller: PushedTicketCaller,
    ticket: Arc<TicketCell>,
    keeper: Arc<dyn TicketKeeper>,
    last_push_request: Mutex<Option<Instant>>,
    /// The last ticket upstream refused, or one kept with implausible
    /// times: never read back from the store.
    rejected: Mutex<Option<Arc<str>>>,
    /// How long one attempt waits for a pushed ticket.
    wait: Duration,
    clock: Clock,
}

impl PushedTicketSource {
    /// A credential of `shape`, fetched by `caller` with the
    /// ticket in `ticket` (or, without one there, the one `keeper` has).
    pub fn new(
        shape: &'static PushedTicketShape,
        caller: PushedTicketCaller,
        ticket: Arc<TicketCell>,
        keeper: Arc<dyn TicketKeeper>,
        clock: Clock,
    ) -> Self {
        PushedTicketSource {
            shape,
            wait: caller.timeout,
            caller,
            ticket,
            keeper,
            last_push_request: Mutex::new(None),
            rejected: Mutex::new(None),
            clock,
        }
    }

    /// The ticket to fetch with: the cell's, else the store's (another
    /// broker of the fleet may have received the push), if still valid.
    async fn current_ticket(&self) -> Option<Arc<str>> {
        if let Some(ticket) = self.ticket.borrow().clone() {
            return Some(ticket);
        }
        let kept = match self.keeper.load_ticket().await {
            Ok(kept) => kept?,
            // Refused state was logged and set aside by the store.
            Err(err) if err.is_untrusted() => return None,
            Err(err) => {
                warn!(error = %Chain(&err), "cannot read the stored {}", self.shape.ticket);
                return None;
            }
        };
        let now = self.clock.now_secs();
        let refused = self.rejected.lock().expect("poisoned").as_deref() == Some(&*kept.ticket);
        if refused {
            return None;
        }
        let received_ms = kept.received_at.saturating_mul(1000);
        if let Some(problem) = implausible_times(received_ms, received_ms, now) {
            // Dated ahead, it would never age out. Remembered as refused,
            // so it is refused (and logged) once.
            error!(%problem, "refusing a stored {} no broker could have received; asking for a new push", self.shape.ticket);
            *self.rejected.lock().expect("poisoned") = Some(Arc::from(kept.ticket));
            return None;
        }
        if now.saturating_sub(kept.received_at) >= self.shape.ticket_lifetime.as_secs() {
            return None;
        }
        let ticket: Arc<str> = Arc::from(kept.ticket);
        self.ticket.send_replace(Some(ticket.clone()));
        Some(ticket)
    }

    /// POSTs `body` to `path` and returns the answer, an errcode other
    /// than 0 turned into [`FetchError::Api`].
    async fn call(&self, path: &str, body: Value) -> Result<Map<String, Value>, FetchError> {
        let caller = &self.caller;
        let request = caller
            .http
            .post(format!("{}{path}", caller.api_base))
            .json(&body);
        let exchange = async {
            let bytes = crate::wechat::credential_body(request).await?;
            let answer: Map<String, Value> = serde_json::from_slice(&bytes)
                .map_err(|_| FetchError::Malformed("not a JSON object".into()))?;
            let errcode = match answer.get("errcode") {
                None | Some(Value::Null) => 0,
                Some(code) => code
                    .as_i64()
                    .ok_or_else(|| FetchError::Malformed("errcode is not a number".into()))?,
            };
            if errcode != 0 {
                let errmsg = answer.get("errmsg").and_then(Value::as_str);
                return Err(FetchError::Api {
                    errcode,
                    errmsg: errmsg.unwrap_or_default().to_owned(),
                });
            }
            Ok(answer)
        };
        tokio::time::timeout(caller.timeout, exchange)
            .await
            .unwrap_or(Err(FetchError::Timeout(caller.timeout)))
    }

    /// Asks upstream to push a ticket, where it can be asked, unless it
    /// was asked within [`PUSH_REQUEST_INTERVAL`].
    async fn request_push(&self) {
        let Some(push) = &self.shape.push_request else {
            return;
        };
        {
            let mut last = self.last_push_request.lock().expect("poisoned");
            if last.is_some_and(|at| at.elapsed() < PUSH_REQUEST_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let body = json!({
            push.id_field: self.caller.id,
            push.secret_field: self.caller.secret.expose(),
        });
        match self.call(push.path, body).await {
            Ok(_) => {
                info!("no valid {}; asked upstream to push one", self.shape.ticket)
            }
            Err(err) => {
                warn!(error = %Chain(&err), "asking upstream to push a {} failed", self.shape.ticket)
            }
        }
    }

    async fn wait_for_ticket(&self) -> Result<(), FetchError> {
        if self.current_ticket().await.is_some() {
            return Ok(());
        }
        let mut changes = self.ticket.subscribe();
        self.request_push().await;
        let arrived = tokio::time::timeout(self.wait, changes.wait_for(Option::is_some)).await;
        match arrived {
            Ok(Ok(_)) => Ok(()),
            _ => Err(FetchError::NoPushedTicket(self.shape.ticket)),
        }
    }

    async fn fetch_with_ticket(&self) -> Result<TokenGrant, FetchError> {
        let ticket = self
            .current_ticket()
            .await
            .ok_or(FetchError::NoPushedTicket(self.shape.ticket))?;
        let body = self
            .shape
            .token_body(&self.caller.id, &self.caller.secret, &ticket);
        let result = match self.call(self.shape.token_path, body).await {
            Ok(answer) => self.shape.grant(&answer),
            Err(err) => Err(err),
        };
        if let Err(FetchError::Api { errcode, .. }) = &result {
            if self.shape.ticket_rejected.contains(errcode) {
                warn!(
                    errcode,
                    "upstream refused the {}; asking for a new push", self.shape.ticket
                );
                *self.rejected.lock().expect("poisoned") = Some(ticket.clone());
                self.ticket.send_if_modified(|held| {
                    let same = held.as_deref() == Some(&*ticket);
                    if same {
                        *held = None;
                    }
                    same
                });
                self.request_push().await;
            }
        }
        result
    }
}

impl TokenSource for PushedTicketSource {
    fn fetch(&self, _force_refresh: bool) -> BoxFuture<'_, Result<TokenGrant, FetchError>> {
        Box::pin(self.fetch_with_ticket())
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), FetchError>> {
        Box::pin(self.wait_for_ticket())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// WeCom's suite token, as its kind will declare it: the proof that a
    /// second credential of this shape is data, not another source.
    const SUITE: PushedTicketShape = PushedTicketShape {
        ticket: "suite_ticket",
        ticket_lifetime: Duration::from_secs(30 * 60),
        token_path: "/cgi-bin/service/get_suite_token",
        id_field: "suite_id",
        secret_field: "suite_secret",
        ticket_field: "suite_ticket",
        value_field: "suite_access_token",
        ticket_rejected: &[40085],
        push_request: None,
    };

    fn answer(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn a_shape_names_the_request_and_the_answer() {
        let body = SUITE.token_body("ww-suite", &Secret::new("sec"), "tick");
        assert_eq!(
            body,
            json!({"suite_id": "ww-suite", "suite_secret": "sec", "suite_ticket": "tick"})
        );
        let grant = SUITE
            .grant(&answer(
                r#"{"errcode":0,"errmsg":"ok","suite_access_token":"st-1","expires_in":7200}"#,
            ))
            .unwrap();
        assert_eq!((grant.token.expose(), grant.expires_in), ("st-1", 7200));
        let clamped = SUITE
            .grant(&answer(
                r#"{"suite_access_token":"st-2","expires_in":99999999}"#,
            ))
            .unwrap();
        assert_eq!(clamped.expires_in, MAX_LIFETIME_SECS);
        for broken in [
            r#"{"component_access_token":"c","expires_in":7200}"#,
            r#"{"suite_access_token":"","expires_in":7200}"#,
            r#"{"suite_access_token":"st","expires_in":0}"#,
            r#"{"suite_access_token":7,"expires_in":7200}"#,
        ] {
            assert!(
                matches!(SUITE.grant(&answer(broken)), Err(FetchError::Malformed(_))),
                "{broken}"
            );
        }
    }
}
