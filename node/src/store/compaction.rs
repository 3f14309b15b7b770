//! Compaction: dropping history no read can ask for any more.
//!
//! After compacting at revision R, reads at revisions >= R must still work, so
//! for each key the newest version at or before R stays (unless it is a
//! deletion) and everything older goes, in the same batch as the rest of the
//! Compact command's apply.

use rocksdb::WriteBatch;
use rocksdb::DB;

use super::cf;
use super::mvcc;
use super::schema;
use super::schema::CF_KV_HISTORY;
use crate::errors::ApiError;

/// Drop every version that no read at or after `revision` can see: for each key,
/// all versions older than its newest one at or before `revision`, and that one
/// too if it is a tombstone.
pub(crate) fn compact_history(
    db: &DB,
    batch: &mut WriteBatch,
    revision: i64,
) -> Result<(), ApiError> {
    let hist = cf(db, CF_KV_HISTORY);
    let mut pending: Option<(Vec<u8>, Vec<u8>, bool)> = None; // (user key, history key, is tombstone)
    for item in db.iterator_cf(hist, rocksdb::IteratorMode::Start) {
        let (hkey, value) = item.map_err(ApiError::internal)?;
        let Some((user_key, rev)) = schema::decode_history_key(&hkey) else {
            return Err(ApiError::internal("corrupt history key"));
        };
        if let Some((k, older, tomb)) = pending.take() {
            // Drop the older version when a newer one at or before `revision`
            // follows it, and a tombstone when nothing newer needs it.
            if (k == user_key && rev <= revision) || tomb {
                batch.delete_cf(hist, &older);
            }
        }
        if rev <= revision {
            pending = Some((
                user_key,
                hkey.to_vec(),
                value.first() == Some(&mvcc::HISTORY_TOMBSTONE),
            ));
        }
    }
    if let Some((_, older, true)) = pending {
        batch.delete_cf(hist, &older);
    }
    Ok(())
}
