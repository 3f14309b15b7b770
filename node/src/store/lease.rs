//! Leases in the state machine: which exist, and which keys each one holds.
//!
//! `leases` maps a lease id to its granted TTL; `lease_keys` holds one entry per
//! (lease, key) so a revoke finds its keys without scanning the store. Grant and
//! revoke are log entries, so every member agrees on both; *when* a lease
//! expires is decided by the leader alone (see `crate::lease`), which then
//! proposes the revoke.

use prost::Message;
use rocksdb::IteratorMode;
use rocksdb::DB;

use super::cf;
use super::schema::CF_LEASES;
use super::schema::CF_LEASE_KEYS;
use super::schema::{lease_key, lease_keys_prefix};
use crate::errors::ApiError;
use crate::proto::etcdserverpb::LeaseGrantRequest;

/// The longest TTL etcd accepts, in seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// Every lease and its granted TTL, in id order.
pub fn all_leases(db: &DB) -> Result<Vec<(i64, i64)>, ApiError> {
    let mut out = Vec::new();
    for item in db.iterator_cf(cf(db, CF_LEASES), IteratorMode::Start) {
        let (k, v) = item.map_err(ApiError::internal)?;
        let id = u64::from_be_bytes(k.as_ref().try_into().map_err(ApiError::internal)?) as i64;
        let grant = LeaseGrantRequest::decode(v.as_ref()).map_err(ApiError::internal)?;
        out.push((id, grant.ttl));
    }
    Ok(out)
}

/// The granted TTL of a lease, if it exists.
pub fn lease_ttl(db: &DB, id: i64) -> Result<Option<i64>, ApiError> {
    let Some(v) = db
        .get_cf(cf(db, CF_LEASES), lease_key(id))
        .map_err(ApiError::internal)?
    else {
        return Ok(None);
    };
    Ok(Some(
        LeaseGrantRequest::decode(v.as_slice())
            .map_err(ApiError::internal)?
            .ttl,
    ))
}

/// The keys attached to a lease.
pub fn lease_keys(db: &DB, id: i64) -> Result<Vec<Vec<u8>>, ApiError> {
    let prefix = lease_keys_prefix(id);
    let iter = db.iterator_cf(
        cf(db, CF_LEASE_KEYS),
        IteratorMode::From(&prefix, rocksdb::Direction::Forward),
    );
    let mut out = Vec::new();
    for item in iter {
        let (k, _) = item.map_err(ApiError::internal)?;
        if !k.starts_with(&prefix) {
            break;
        }
        out.push(k[prefix.len()..].to_vec());
    }
    Ok(out)
}
