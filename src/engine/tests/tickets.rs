//! The engine serving tickets (DESIGN.md section 11) on the paused clock:
//! a scripted ticket endpoint with WeChat's same-ticket quirk, fetched
//! with the app's token from the scripted token source.

use super::*;
use crate::config::TicketConfig;
use crate::credential::TicketKind;

/// A fake ticket endpoint for one app and kind: the same ticket while it
/// is valid (with `expires_in` reset to the full lifetime), a new one
/// after. Every call must carry the app's valid token. A lagging one keeps
/// a ticket `lag` longer than the broker reckons (as a slow first answer
/// makes it), so a ticket the broker sees die is still handed out a while.
const UPSTREAM_SKEW: Duration = Duration::from_secs(2);

#[derive(Default)]
pub(super) struct FakeTickets {
    endpoint: Arc<FakeTicketEndpoint>,
}

#[derive(Default)]
struct FakeTicketEndpoint {
    lag: Duration,
    calls: Mutex<Vec<Instant>>,
    issued: AtomicU64,
    current: Mutex<Option<(AccessToken, Instant)>>,
    script: Mutex<VecDeque<FetchError>>,
}

struct FakeTicketSource {
    endpoint: Arc<FakeTicketEndpoint>,
    token: CredentialHandle,
}

impl TicketSources for FakeTickets {
    fn source(
        &self,
        _app: &AppConfig,
        _kind: TicketKind,
        token: CredentialHandle,
    ) -> Arc<dyn TokenSource> {
        Arc::new(FakeTicketSource {
            endpoint: self.endpoint.clone(),
            token,
        })
    }
}

impl FakeTicketEndpoint {
    fn answer(&self) -> Result<TokenGrant, FetchError> {
        if let Some(err) = self.script.lock().unwrap().pop_front() {
            return Err(err);
        }
        let now = Instant::now();
        let mut current = self.current.lock().unwrap();
        if let Some((ticket, expires)) = current.as_ref().filter(|(_, at)| now < *at) {
            let _ = expires;
            return Ok(TokenGrant {
                token: ticket.clone(),
                expires_in: LIFETIME,
            });
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let ticket = AccessToken::new(format!("ticket-{n}"));
        *current = Some((
            ticket.clone(),
            now + Duration::from_secs(LIFETIME) + self.lag,
        ));
        Ok(TokenGrant {
            token: ticket,
            expires_in: LIFETIME,
        })
    }
}

impl TokenSource for FakeTicketSource {
    fn fetch(&self, _force: bool) -> BoxFuture<'_, Result<TokenGrant, FetchError>> {
        Box::pin(async move {
            self.endpoint.calls.lock().unwrap().push(Instant::now());
            assert!(
                self.token.valid_token().is_some(),
                "a ticket is asked for with a valid token only"
            );
            // Decided when the call arrives, answered a moment later.
            let answer = self.endpoint.answer();
            tokio::time::sleep(Duration::from_millis(50)).await;
            answer
        })
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), FetchError>> {
        Box::pin(async move {
            self.token
                .token(Duration::from_secs(10))
                .await
                .map(drop)
                .map_err(|err| FetchError::Parent(err.to_string()))
        })
    }
}

impl FakeTickets {
    fn lagging(lag: Duration) -> Self {
        FakeTickets {
            endpoint: Arc::new(FakeTicketEndpoint {
                lag,
                ..FakeTicketEndpoint::default()
            }),
        }
    }

    pub(super) fn calls(&self) -> usize {
        self.endpoint.calls.lock().unwrap().len()
    }

    fn fail_next(&self, err: FetchError, count: usize) {
        self.endpoint
            .script
            .lock()
            .unwrap()
            .extend(std::iter::repeat_n(err, count));
    }
}

pub(super) fn with_jsapi(budget: u32) -> AppConfig {
    AppConfig {
        tickets: vec![TicketConfig {
            kind: TicketKind::Jsapi,
            daily_budget: budget,
        }],
        ..app(Grant::Classic)
    }
}

fn start_tickets(
    unix: Duration,
    config: AppConfig,
    source: Arc<FakeSource>,
    store: Arc<dyn Store>,
) -> (Running, Arc<FakeTickets>) {
    start_lagging(unix, config, source, store, Duration::ZERO)
}

fn start_lagging(
    unix: Duration,
    config: AppConfig,
    source: Arc<FakeSource>,
    store: Arc<dyn Store>,
    lag: Duration,
) -> (Running, Arc<FakeTickets>) {
    let tickets = Arc::new(FakeTickets::lagging(lag));
    let running = start_full(unix, config, source, store, tickets.clone());
    (running, tickets)
}

fn jsapi(running: &Running) -> CredentialHandle {
    running.handle.ticket(TicketKind::Jsapi).unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn a_ticket_lives_on_its_own_clock_and_is_never_refetched_for_its_token() {
    let source = FakeSource::classic();
    let (running, tickets) = start_tickets(
        Duration::from_secs(START),
        with_jsapi(200),
        source.clone(),
        Arc::new(MemoryStore::new()),
    );
    let first = jsapi(&running).token(WAIT).await.unwrap();
    assert_eq!((source.calls(), tickets.calls()), (1, 1));
    // Force the token to be replaced: the ticket stays.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let token = running.handle.valid_token().unwrap();
    running
        .handle
        .invalidate(token.value.expose(), WAIT)
        .await
        .unwrap();
    assert_eq!(source.calls(), 2);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        tickets.calls(),
        1,
        "a new token does not refetch the ticket"
    );
    assert_eq!(jsapi(&running).valid_token().unwrap().value, first.value);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_answer_with_the_held_ticket_never_extends_its_expiry() {
    let (running, tickets) = start_lagging(
        Duration::from_secs(START),
        with_jsapi(200),
        FakeSource::classic(),
        Arc::new(MemoryStore::new()),
        UPSTREAM_SKEW,
    );
    let ticket = jsapi(&running);
    let first = ticket.token(WAIT).await.unwrap();
    // Asking early only gets the same ticket back: nothing is asked
    // before it dies, though the token is refreshed meanwhile.
    tokio::time::sleep(Duration::from_secs(LIFETIME - 1)).await;
    assert_eq!(tickets.calls(), 1);
    // A second past the broker's expiry, upstream (whose clock is behind)
    // still holds it: the same ticket, with the full expires_in again,
    // which is not believed.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(tickets.calls(), 2);
    let view = ticket.view();
    let held = view.token.as_ref().unwrap();
    assert_eq!(
        (&held.value, held.expires_at_ms),
        (&first.value, first.expires_at_ms)
    );
    assert!(
        ticket.valid_token().is_none(),
        "a dead ticket is never served"
    );
    // Asked again a second later, never in a spin, once upstream's copy
    // has died too: then the new one, with readers waiting no longer.
    let next = ticket.token(UPSTREAM_SKEW * 2).await.unwrap();
    assert_ne!(next.value, first.value);
    assert!(
        (3..=4).contains(&tickets.calls()),
        "{} calls",
        tickets.calls()
    );
    // A day on: a few calls a lifetime, and readers never get a dead
    // ticket, waiting at most the skew at each change.
    let end = Instant::now() + Duration::from_secs(86_400);
    let mut gap = Duration::ZERO;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if ticket.valid_token().is_none() {
            gap += Duration::from_millis(500);
        }
    }
    assert!(
        gap <= 12 * (UPSTREAM_SKEW + Duration::from_secs(1)),
        "no ticket for {gap:?} in a day"
    );
    assert!(tickets.calls() <= 4 + 3 * 12, "{} calls", tickets.calls());
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_warm_restart_makes_no_ticket_call() {
    let store = Arc::new(MemoryStore::new());
    let (running, tickets) = start_tickets(
        Duration::from_secs(START),
        with_jsapi(200),
        FakeSource::classic(),
        store.clone(),
    );
    let first = jsapi(&running).token(WAIT).await.unwrap();
    assert_eq!(tickets.calls(), 1);
    tokio::time::sleep(Duration::from_secs(600)).await;
    let now = running.clock.now();
    running.stop().await;

    let source = FakeSource::classic();
    let (running, tickets) = start_tickets(now, with_jsapi(200), source.clone(), store);
    let ticket = jsapi(&running).token(Duration::from_secs(1)).await.unwrap();
    assert_eq!(ticket.value, first.value);
    assert_eq!((source.calls(), tickets.calls()), (0, 0));
    assert_eq!(jsapi(&running).view().fetches_today, 1);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn each_ticket_kind_has_its_own_daily_budget() {
    let (running, tickets) = start_tickets(
        Duration::from_secs(START),
        with_jsapi(2),
        FakeSource::classic(),
        Arc::new(MemoryStore::new()),
    );
    tickets.fail_next(
        FetchError::Api {
            errcode: -1,
            errmsg: "system error".into(),
        },
        100,
    );
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(tickets.calls(), 2, "the ticket budget caps the calls");
    let view = jsapi(&running).view();
    assert!(view.held);
    let error = view.last_error.unwrap();
    assert!(
        error.errmsg.contains("ticket_budget.jsapi"),
        "{}",
        error.errmsg
    );
    // The token's own budget is untouched.
    assert_eq!(running.handle.view().fetches_today, 1);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn without_a_token_no_ticket_call_is_made_or_counted() {
    let source = FakeSource::classic();
    source.fail_next(
        FetchError::Api {
            errcode: 40013,
            errmsg: "invalid appid".into(),
        },
        10,
    );
    let (running, tickets) = start_tickets(
        Duration::from_secs(START),
        with_jsapi(200),
        source,
        Arc::new(MemoryStore::new()),
    );
    tokio::time::sleep(Duration::from_secs(300)).await;
    let view = jsapi(&running).view();
    assert_eq!((tickets.calls(), view.fetches_today), (0, 0));
    let error = view.last_error.expect("the cause is shown");
    assert!(error.errmsg.contains("access token"), "{}", error.errmsg);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn invalidating_a_ticket_upstream_still_holds_keeps_it() {
    let (running, tickets) = start_tickets(
        Duration::from_secs(START),
        with_jsapi(200),
        FakeSource::classic(),
        Arc::new(MemoryStore::new()),
    );
    let ticket = jsapi(&running);
    let first = ticket.token(WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let outcome = ticket.invalidate(first.value.expose(), WAIT).await.unwrap();
    assert_eq!(outcome, InvalidateOutcome::Unchanged);
    assert_eq!(tickets.calls(), 2);
    let held = ticket.valid_token().unwrap();
    assert_eq!(
        (held.value.clone(), held.expires_at_ms),
        (first.value.clone(), first.expires_at_ms)
    );
    // A ticket already replaced is not refetched.
    let outcome = ticket.invalidate("ticket-old", WAIT).await.unwrap();
    assert_eq!(outcome, InvalidateOutcome::AlreadyRotated);
    assert_eq!(tickets.calls(), 2);
    running.stop().await;
}
