//! The fleet's refresh lock for one credential. It lives for a short
//! lease ([`LOCK_LEASE`]) that its holder renews while it works, at most
//! for the hold it asked for: a broker that dies holding it (SIGKILL, a
//! lost host) keeps the fleet waiting one lease, not a whole fetch
//! timeout. It is released by compare-and-delete when the work ends, and
//! on close (shutdown) for any still held, such as one whose refresher
//! was cut off by the shutdown deadline.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::keys::Keys;
use super::{eval, Core};
use crate::store::{LockToken, StoreError, LOCK_LEASE};

/// Deletes the lock only if we still own it.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Extends the lease only if we still own the lock.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Renewals per lease: one that fails (a slow command) leaves time for
/// the next before the lease runs out.
const RENEWALS_PER_LEASE: u32 = 4;

/// A lock this broker holds.
pub(super) struct Held {
    lock_key: String,
    /// Dropped (or sent to) to stop the renewal.
    _stop_renewing: oneshot::Sender<()>,
}

pub(super) async fn try_lock(
    core: &Arc<Core>,
    keys: &Keys,
    hold: std::time::Duration,
) -> Result<Option<LockToken>, StoreError> {
    core.release_unanswered_locks().await?;
    let lock_key = keys.lock();
    let owner = format!("{}-{:08x}", core.owner, rand::random::<u32>());
    let options = redis::SetOptions::default()
        .conditional_set(redis::ExistenceCheck::NX)
        .with_expiration(redis::SetExpiry::PX(LOCK_LEASE.as_millis() as u64));
    let taken: Result<Option<String>, StoreError> = core
        .run("lock", async |mut c| {
            redis::AsyncCommands::set_options(&mut c, &lock_key, &owner, options).await
        })
        .await;
    let taken = match taken {
        Ok(taken) => taken,
        Err(err) => {
            core.unanswered_locks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((lock_key, owner));
            return Err(err);
        }
    };
    if taken.is_none() {
        return Ok(None);
    }
    let (stop_renewing, stopped) = oneshot::channel();
    core.held_locks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            owner.clone(),
            Held {
                lock_key: lock_key.clone(),
                _stop_renewing: stop_renewing,
            },
        );
    tokio::spawn(keep(
        Arc::downgrade(core),
        lock_key,
        owner.clone(),
        hold,
        stopped,
    ));
    Ok(Some(LockToken(owner)))
}

pub(super) async fn unlock(core: &Core, keys: &Keys, lock: LockToken) -> Result<(), StoreError> {
    // Whatever the outcome, the renewal stops: the lease ends the lock
    // soon if the delete did not.
    core.forget_held(&lock.0);
    core.release(&keys.lock(), &lock.0).await
}

/// Renews the lease until the lock is released, the store is dropped, or
/// `hold` has passed.
async fn keep(
    core: std::sync::Weak<Core>,
    lock_key: String,
    owner: String,
    hold: std::time::Duration,
    mut stopped: oneshot::Receiver<()>,
) {
    let until = Instant::now() + hold;
    let every = LOCK_LEASE / RENEWALS_PER_LEASE;
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(every) => {}
        }
        let Some(core) = core.upgrade() else { return };
        if Instant::now() + LOCK_LEASE > until {
            warn!(lock = %lock_key, "held the refresh lock as long as allowed; letting it lapse");
            core.forget_held(&owner);
            return;
        }
        let mut command = eval(RENEW, &[&lock_key]);
        command.arg(&owner).arg(LOCK_LEASE.as_millis() as u64);
        match core.query::<i64>("lock", &command).await {
            Ok(1) => {}
            Ok(_) => {
                warn!(lock = %lock_key, "lost the refresh lock (expired or taken over)");
                core.forget_held(&owner);
                return;
            }
            Err(err) => debug!(error = %err, "could not renew the refresh lock"),
        }
    }
}

impl Core {
    fn forget_held(&self, owner: &str) {
        self.held_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(owner);
    }

    /// Deletes `lock_key` if `owner` still holds it.
    pub(super) async fn release(&self, lock_key: &str, owner: &str) -> Result<(), StoreError> {
        let mut command = eval(UNLOCK, &[lock_key]);
        command.arg(owner);
        let _: i64 = self.query("unlock", &command).await?;
        Ok(())
    }

    pub(super) async fn release_unanswered_locks(&self) -> Result<(), StoreError> {
        let pending = std::mem::take(
            &mut *self
                .unanswered_locks
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for (index, (lock_key, owner)) in pending.iter().enumerate() {
            if let Err(err) = self.release(lock_key, owner).await {
                self.unanswered_locks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(pending[index..].iter().cloned());
                return Err(err);
            }
        }
        Ok(())
    }

    /// On shutdown: every lock still held goes, so the fleet need not
    /// wait out a lease for a broker that is leaving.
    pub(super) async fn release_held_locks(&self) {
        let held: Vec<(String, String)> = self
            .held_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(owner, held)| (held.lock_key, owner))
            .collect();
        for (lock_key, owner) in held {
            match self.release(&lock_key, &owner).await {
                Ok(()) => debug!(lock = %lock_key, "released the refresh lock on shutdown"),
                Err(err) => {
                    warn!(lock = %lock_key, error = %err, "could not release the refresh lock on shutdown; its lease ends it")
                }
            }
        }
    }
}
