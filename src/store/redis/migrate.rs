//! Moving a fleet's state from Part I's key layout (no hash tag) to the
//! tagged one ([`super::keys`]), so an upgraded fleet keeps its token and
//! its day's count: no upstream fetch, no budget reset. Each credential's
//! old keys are looked for once per broker; what is found is written
//! under the new keys and the old keys deleted, so it is read once.

use tracing::{info, warn};

use super::keys::Keys;
use super::{eval, Core, COUNTER_TTL_SECS};
use crate::store::{StoreError, StoredCredential};

/// Returns and deletes a key (GETDEL, for servers older than 6.2 too):
/// of brokers migrating at once, exactly one gets an old counter.
const TAKE: &str = r"
local value = redis.call('GET', KEYS[1])
if value then
  redis.call('DEL', KEYS[1])
end
return value
";

/// Deletes the old record only if it is still what was migrated.
const DELETE_IF_SAME: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

impl Core {
    /// Whether this credential's old keys still need a look; marks them
    /// looked at.
    fn first_look(&self, keys: &Keys, what: &str) -> bool {
        self.migrated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(format!("{what} {}", keys.tag()))
    }

    /// The record Part I's layout holds, if any, copied to the new key (if
    /// none newer is there) and deleted from the old one. The old key is
    /// read once: on a failure it is looked at again next time.
    pub(super) async fn migrate_record(&self, keys: &Keys) -> Result<Option<String>, StoreError> {
        if !self.first_look(keys, "record") {
            return Ok(None);
        }
        let looked = self.copy_record(keys).await;
        if looked.is_err() {
            self.migrated
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&format!("record {}", keys.tag()));
        }
        looked
    }

    async fn copy_record(&self, keys: &Keys) -> Result<Option<String>, StoreError> {
        let old_key = keys.legacy_token();
        let raw: Option<String> = self
            .run("get", async |mut c| {
                redis::AsyncCommands::get(&mut c, &old_key).await
            })
            .await?;
        let Some(raw) = raw else { return Ok(None) };
        match serde_json::from_str::<StoredCredential>(&raw) {
            Ok(record) => {
                self.save(keys, &record).await?;
                info!(from = %old_key, to = %keys.token(), "moved a stored record to the hash-tagged key layout");
            }
            // Left for the caller to report as corrupt, like any record.
            Err(err) => {
                warn!(key = %old_key, error = %err, "an unreadable record in the old key layout")
            }
        }
        let mut command = eval(DELETE_IF_SAME, &[&old_key]);
        command.arg(&raw);
        let _: i64 = self.query("migrate", &command).await?;
        Ok(Some(raw))
    }

    /// Adds the day's count kept under Part I's layout to the new counter.
    pub(super) async fn migrate_counter(&self, keys: &Keys, day: u32) -> Result<(), StoreError> {
        if !self.first_look(keys, &format!("fetches {day}")) {
            return Ok(());
        }
        let old_key = keys.legacy_fetches(day);
        let taken: Option<u32> = self
            .query("migrate", &eval(TAKE, &[&old_key]))
            .await
            .inspect_err(|_| {
                self.migrated
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&format!("fetches {day} {}", keys.tag()));
            })?;
        let Some(count) = taken.filter(|count| *count > 0) else {
            return Ok(());
        };
        let mut command = eval(super::COUNT, &[&keys.fetches(day)]);
        command.arg(count).arg(COUNTER_TTL_SECS);
        let total: u32 = self.query("migrate", &command).await?;
        info!(from = %old_key, count, total, "moved the day's fetch count to the hash-tagged key layout");
        Ok(())
    }
}
