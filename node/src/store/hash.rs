//! Checksums of the MVCC store, for Maintenance Hash and HashKV.
//!
//! HashKV is the consistency check between members: every member that has
//! applied the same log holds the same history, so its hash of the history up
//! to a revision is the same. The value is raftkv's own (CRC-32 over history
//! keys and values), comparable between raftkv members, not with etcd's.

use rocksdb::IteratorMode;
use rocksdb::DB;

use super::cf;
use super::mvcc;
use super::schema;
use super::schema::CF_KV;
use super::schema::CF_KV_HISTORY;
use super::schema::CF_LEASES;
use super::schema::CF_LEASE_KEYS;
use crate::errors::ApiError;

/// (hash, compact revision, revision hashed) of the history up to `revision`
/// (0 = current), read from one snapshot of the store.
pub fn hash_kv(db: &DB, revision: i64) -> Result<(u32, i64, i64), ApiError> {
    let snap = db.snapshot();
    let view = mvcc::View {
        db,
        snap: Some(&snap),
    };
    let current = mvcc::read_i64(&view, schema::KEY_REVISION).unwrap_or(1);
    let compacted = mvcc::read_i64(&view, schema::KEY_COMPACT_REVISION).unwrap_or(0);
    let upto = if revision == 0 { current } else { revision };
    if upto > current {
        return Err(ApiError::future_revision());
    }
    if upto < compacted {
        return Err(ApiError::compacted());
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&compacted.to_be_bytes());
    for item in snap.iterator_cf(cf(db, CF_KV_HISTORY), IteratorMode::Start) {
        let (k, v) = item.map_err(ApiError::internal)?;
        let Some((_, rev)) = schema::decode_history_key(&k) else {
            return Err(ApiError::internal("corrupt history key"));
        };
        if rev <= upto {
            h.update(&k);
            h.update(&v);
        }
    }
    Ok((h.finalize(), compacted, upto))
}

/// A hash of all key-value and lease state (Maintenance Hash).
pub fn hash_all(db: &DB) -> Result<u32, ApiError> {
    let snap = db.snapshot();
    let mut h = crc32fast::Hasher::new();
    for family in [CF_KV, CF_KV_HISTORY, CF_LEASES, CF_LEASE_KEYS] {
        for item in snap.iterator_cf(cf(db, family), IteratorMode::Start) {
            let (k, v) = item.map_err(ApiError::internal)?;
            h.update(&k);
            h.update(&v);
        }
    }
    Ok(h.finalize())
}

/// Flush and compact every column family (Maintenance Defragment): deleted and
/// compacted-away data leaves the table files, and flushed memtables let the
/// write-ahead log files go.
pub fn defragment(db: &DB) -> Result<(), ApiError> {
    for family in super::ALL_CFS {
        db.flush_cf(cf(db, family)).map_err(ApiError::internal)?;
        db.compact_range_cf(cf(db, family), None::<&[u8]>, None::<&[u8]>);
    }
    Ok(())
}
