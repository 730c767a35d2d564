//! The fleet strategy on the paused clock: several brokers sharing one
//! in-process [`MemoryFleet`] (the shared store's semantics without a
//! Redis) and one scripted upstream behave as one broker.

use super::*;
use crate::store::MemoryFleet;

const SIZE: usize = 3;

fn fleet_of(
    config: &AppConfig,
    source: &Arc<FakeSource>,
    store: &Arc<MemoryFleet>,
) -> Vec<Running> {
    (0..SIZE)
        .map(|_| {
            start_full(
                Duration::from_secs(START),
                config.clone(),
                source.clone(),
                store.clone(),
                Arc::new(tickets::FakeTickets::default()),
            )
        })
        .collect()
}

/// Waits until every broker serves one token; returns it.
async fn agreed(fleet: &[Running]) -> AccessToken {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tokens: Vec<_> = fleet.iter().map(|b| b.handle.valid_token()).collect();
        if let Some(Some(first)) = tokens.first() {
            if tokens
                .iter()
                .all(|t| t.as_ref().map(|t| &t.value) == Some(&first.value))
            {
                return first.value.clone();
            }
        }
        assert!(Instant::now() < deadline, "the fleet never agreed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stop_all(fleet: Vec<Running>) {
    for running in fleet {
        running.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_fleet_fetches_like_one_broker() {
    let source = FakeSource::classic();
    let store = Arc::new(MemoryFleet::new());
    let fleet = fleet_of(&app(Grant::Classic), &source, &store);
    agreed(&fleet).await;
    assert_eq!(source.calls(), 1, "one fetch for the fleet's first token");
    // Ten lifetimes: every broker always serves a valid token, and the
    // fleet fetches as often as one broker would.
    let end = Instant::now() + Duration::from_secs(10 * LIFETIME);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(30)).await;
        for running in &fleet {
            assert!(
                running.handle.valid_token().is_some(),
                "a broker had no token"
            );
        }
    }
    let one_broker = 1 + (10 * LIFETIME) / (LIFETIME - 300);
    assert_eq!(source.calls() as u64, one_broker);
    assert_eq!(source.max_in_flight(), 1, "never two fetches at once");
    let key = StoreKey::for_app(&app(Grant::Classic));
    let day = fleet[0].handle.view().fetches_day;
    assert_eq!(
        store.count(&key, day) as usize,
        source.calls(),
        "one fleet budget"
    );
    stop_all(fleet).await;
}

#[tokio::test(start_paused = true)]
async fn invalidations_across_the_fleet_make_one_fetch() {
    let source = FakeSource::classic();
    let store = Arc::new(MemoryFleet::new());
    let fleet = fleet_of(&app(Grant::Classic), &source, &store);
    let first = agreed(&fleet).await;
    tokio::time::sleep(Duration::from_secs(31)).await;
    let reports: Vec<_> = fleet
        .iter()
        .flat_map(|running| {
            let first = first.clone();
            (0..20).map(move |_| {
                let handle = running.handle.clone();
                let reported = first.expose().to_owned();
                tokio::spawn(async move { handle.invalidate(&reported, WAIT).await.unwrap() })
            })
        })
        .collect();
    for report in reports {
        let outcome = report.await.unwrap();
        assert!(
            matches!(
                outcome,
                InvalidateOutcome::Refreshed | InvalidateOutcome::AlreadyRotated
            ),
            "{outcome:?}"
        );
    }
    let second = agreed(&fleet).await;
    assert_ne!(second, first);
    assert_eq!(
        source.calls(),
        2,
        "sixty reports in three brokers, one fetch"
    );
    stop_all(fleet).await;
}

#[tokio::test(start_paused = true)]
async fn with_the_store_away_the_fleet_keeps_serving_and_agrees_again_after() {
    let source = FakeSource::classic();
    let store = Arc::new(MemoryFleet::new());
    let fleet = fleet_of(&app(Grant::Classic), &source, &store);
    agreed(&fleet).await;
    store.set_reachable(false);
    // Past a refresh: each classic broker refreshes alone only at the end
    // of its token, and never leaves readers without one.
    let end = Instant::now() + Duration::from_secs(LIFETIME + 600);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(10)).await;
        for running in &fleet {
            assert!(
                running.handle.valid_token().is_some(),
                "a broker had no token"
            );
        }
    }
    let alone = source.calls();
    assert!((2..=1 + SIZE).contains(&alone), "{alone} fetches");
    store.set_reachable(true);
    agreed(&fleet).await;
    // Agreeing again costs at most one fetch under the lock.
    assert!(source.calls() <= alone + 1, "{} fetches", source.calls());
    stop_all(fleet).await;
}

#[tokio::test(start_paused = true)]
async fn a_fleet_fetches_each_ticket_once_a_lifetime() {
    let source = FakeSource::classic();
    let store = Arc::new(MemoryFleet::new());
    let tickets = Arc::new(tickets::FakeTickets::default());
    let config = tickets::with_jsapi(200);
    let fleet: Vec<Running> = (0..SIZE)
        .map(|_| {
            start_full(
                Duration::from_secs(START),
                config.clone(),
                source.clone(),
                store.clone(),
                tickets.clone(),
            )
        })
        .collect();
    let end = Instant::now() + Duration::from_secs(5 * LIFETIME);
    let mut gap = Duration::ZERO;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for running in &fleet {
            if running
                .handle
                .ticket(crate::credential::TicketKind::Jsapi)
                .unwrap()
                .valid_token()
                .is_none()
            {
                gap += Duration::from_millis(500);
            }
        }
    }
    // Six tickets in five lifetimes; the upstream's skew costs one repeated
    // answer at each change, for the fleet, not for each broker.
    assert!(tickets.calls() <= 6 * 2, "{} ticket calls", tickets.calls());
    assert!(
        gap <= Duration::from_secs(5 * 4 * SIZE as u64),
        "{gap:?} without a ticket"
    );
    stop_all(fleet).await;
}

/// Three brokers sharing `store`, each running the access token's
/// refresher with the coordination `coordinated` makes for it.
fn three_coordinated(
    source: &Arc<FakeSource>,
    store: &Arc<MemoryFleet>,
    coordinated: impl Fn(
        &Arc<dyn Store>,
    ) -> Box<dyn crate::engine::refresher::coordination::Coordination>,
) -> (Vec<CredentialHandle>, TaskTracker) {
    let tasks = TaskTracker::new();
    let spec = Arc::new(app::token_spec(&app(Grant::Classic)));
    let handles = (0..SIZE)
        .map(|_| {
            let context = EngineContext {
                store: store.clone(),
                tickets: Arc::new(tickets::FakeTickets::default()),
                metrics: Metrics::new(),
                clock: Clock::starting_at(Duration::from_secs(START)),
                tasks: tasks.clone(),
                cancel: CancellationToken::new(),
                token_checks: crate::engine::TokenChecks::default(),
            };
            CredentialHandle::spawn_coordinated(
                spec.clone(),
                source.clone(),
                coordinated(&context.store),
                &context,
                CredentialView::default(),
            )
        })
        .collect();
    (handles, tasks)
}

async fn stop_handles(handles: Vec<CredentialHandle>, tasks: TaskTracker) {
    for handle in &handles {
        handle.stopped().cancel();
    }
    tasks.close();
    tasks.wait().await;
}

#[tokio::test(start_paused = true)]
async fn both_coordinations_drive_one_refresher_through_a_memory_fleet() {
    use crate::engine::refresher::coordination::{Fleet, Local};
    let key = StoreKey::for_app(&app(Grant::Classic));
    let day = crate::clock::beijing_day(START);

    // Alone: every broker has every turn and counts in its own record, so
    // three on one store make three fetches and serve three tokens.
    let source = FakeSource::classic();
    let store = Arc::new(MemoryFleet::new());
    let (alone, tasks) = three_coordinated(&source, &store, |_| Box::new(Local));
    let mut tokens = std::collections::HashSet::new();
    for handle in &alone {
        let token = handle.token(WAIT).await.unwrap();
        tokens.insert(token.value.expose().to_owned());
    }
    assert_eq!((source.calls(), tokens.len()), (SIZE, SIZE));
    assert_eq!(store.count(&key, day), 0, "nothing on the fleet's counter");
    stop_handles(alone, tasks).await;

    // As a fleet: one turn for all, counted on the fleet's counter, and
    // every broker serves the token the one fetch brought.
    let source = FakeSource::classic();
    let store = Arc::new(MemoryFleet::new());
    let (fleet, tasks) =
        three_coordinated(&source, &store, |store| Box::new(Fleet::new(store.clone())));
    let first = fleet[0].token(WAIT).await.unwrap().value.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fleet.iter().all(|handle| {
        handle
            .valid_token()
            .is_some_and(|token| token.value == first)
    }) {
        assert!(Instant::now() < deadline, "the fleet never agreed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(source.calls(), 1);
    assert_eq!(
        store.count(&key, day),
        1,
        "one fetch on the fleet's counter"
    );
    stop_handles(fleet, tasks).await;
}

/// A fleet counter that reads lower than the stored record (another broker
/// is moving an old layout's counter: taken, not yet added) never lowers
/// the day's count the record carried.
#[tokio::test(start_paused = true)]
async fn a_lagging_fleet_counter_never_lowers_the_stored_count() {
    let store = Arc::new(MemoryFleet::new());
    let config = app(Grant::Classic);
    let key = StoreKey::for_app(&config);
    let day = crate::clock::beijing_day(START);
    let record = StoredCredential {
        appid: "wx1".into(),
        grant: "classic".into(),
        token: Some(StoredToken {
            access_token: AccessToken::new("stored"),
            expires_at: START + 3600,
            fetched_at: START + 3600 - LIFETIME,
            fetched_at_ms: (START + 3600 - LIFETIME) * 1000,
        }),
        day,
        fetches: 3,
    };
    store.save(&key, &record).await.unwrap();
    assert_eq!(store.count(&key, day), 0, "the counter is still on its way");
    let source = FakeSource::classic();
    let running = start_full(
        Duration::from_secs(START),
        config,
        source.clone(),
        store.clone(),
        Arc::new(tickets::FakeTickets::default()),
    );
    let token = running.handle.token(WAIT).await.unwrap();
    assert_eq!(token.value.expose(), "stored");
    assert_eq!(source.calls(), 0);
    assert_eq!(running.handle.view().fetches_today, 3);
    running.stop().await;
}
