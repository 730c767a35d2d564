//! The timings of a fleet's refresh lock (DESIGN.md sections 9 and 14):
//! how long the lock lives unless renewed, how long a holder may keep it,
//! and so how early a fleet must start a refresh. They are fixed, not
//! configured, but every app's `refresh_before` on backend "redis" is
//! checked against them, so they live here, below the store that takes
//! the lock and the engine that holds it.

use std::time::Duration;

/// How long a refresh lock lives unless its holder renews it: how long
/// the fleet waits for a broker that died holding it.
pub const LOCK_LEASE: Duration = Duration::from_secs(2);

/// The longest a broker may hold an app's refresh lock: its upstream
/// work (an invalidation of a stable token makes two calls, each bounded
/// by `fetch_timeout`) and a second for the store.
pub fn lock_hold(fetch_timeout: Duration) -> Duration {
    fetch_timeout * 2 + Duration::from_secs(1)
}

/// How long before expiry a fleet must start refreshing so that a holder
/// that dies at the worst moment (its hold almost over) still leaves
/// another broker time for one fetch before the token runs out: the
/// lock's hold, one lease for it to lapse, and one `fetch_timeout`.
pub fn fleet_refresh_window(fetch_timeout: Duration) -> Duration {
    lock_hold(fetch_timeout) + LOCK_LEASE + fetch_timeout
}
