//! Applying lease changes (the state itself is read in `store::lease`).

use super::Applier;
use crate::errors::ApiError;
use crate::proto::etcdserverpb::DeleteRangeRequest;
use crate::proto::etcdserverpb::LeaseGrantRequest;
use crate::proto::etcdserverpb::LeaseGrantResponse;
use crate::proto::etcdserverpb::LeaseRevokeRequest;
use crate::proto::etcdserverpb::LeaseRevokeResponse;
use crate::proto::mvccpb::KeyValue;
use crate::store::cf;
use crate::store::lease::{lease_keys, lease_ttl};
use crate::store::schema::CF_KV;
use crate::store::schema::CF_LEASES;
use crate::store::schema::CF_LEASE_KEYS;
use crate::store::schema::{lease_key, lease_key_entry};
use prost::Message;

impl Applier<'_> {
    /// Whether lease `id` exists, counting grants and revokes earlier in this batch.
    pub(crate) fn lease_exists(&self, id: i64) -> Result<bool, ApiError> {
        if let Some(state) = self.lease_overlay.get(&id) {
            return Ok(*state);
        }
        Ok(lease_ttl(self.db, id)?.is_some())
    }

    /// Move `kv`'s key from the lease it had (in `prev`) to the one it has now.
    pub(crate) fn attach(&mut self, prev: Option<&KeyValue>, kv: &KeyValue) {
        let handle = cf(self.db, CF_LEASE_KEYS);
        if let Some(p) = prev {
            if p.lease != 0 && p.lease != kv.lease {
                self.batch
                    .delete_cf(handle, lease_key_entry(p.lease, &p.key));
            }
        }
        if kv.lease != 0 {
            self.batch
                .put_cf(handle, lease_key_entry(kv.lease, &kv.key), []);
        }
    }

    /// A deleted key no longer belongs to its lease.
    pub(crate) fn detach(&mut self, deleted: &KeyValue) {
        if deleted.lease != 0 {
            self.batch.delete_cf(
                cf(self.db, CF_LEASE_KEYS),
                lease_key_entry(deleted.lease, &deleted.key),
            );
        }
    }

    pub(crate) fn lease_grant(
        &mut self,
        req: &LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, ApiError> {
        // The LeaseGrant handler always picks an id, so only a forged or
        // corrupt command gets here: refuse it. Never Internal, which would
        // stop the state machine on every member at every replay of the entry.
        if req.id <= 0 {
            return Err(ApiError::new(
                tonic::Code::InvalidArgument,
                "raftkv: a lease grant needs a positive lease id",
            ));
        }
        if self.lease_exists(req.id)? {
            return Err(ApiError::new(
                tonic::Code::FailedPrecondition,
                "etcdserver: lease already exists",
            ));
        }
        self.batch.put_cf(
            cf(self.db, CF_LEASES),
            lease_key(req.id),
            req.encode_to_vec(),
        );
        self.lease_overlay.insert(req.id, true);
        self.leases_changed = true;
        Ok(LeaseGrantResponse {
            header: self.header(),
            id: req.id,
            ttl: req.ttl,
            error: String::new(),
        })
    }

    /// Delete the lease and all its keys at one new revision. The database is
    /// clean here (see `needs_clean_db`), so `lease_keys` lists every key.
    pub(crate) fn lease_revoke(
        &mut self,
        req: &LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, ApiError> {
        if !self.lease_exists(req.id)? {
            return Err(ApiError::lease_not_found());
        }
        let keys = lease_keys(self.db, req.id)?;
        let rev = self.revision + 1;
        let mut deleted = 0;
        for key in &keys {
            // Only keys that still carry this lease (a later put may have moved them).
            let held = self
                .db
                .get_cf(cf(self.db, CF_KV), key)
                .map_err(ApiError::internal)?
                .and_then(|b| KeyValue::decode(b.as_slice()).ok())
                .is_some_and(|kv| kv.lease == req.id);
            if held {
                let resp = self.delete_at(
                    &DeleteRangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    },
                    rev,
                )?;
                deleted += resp.deleted;
            }
        }
        if deleted > 0 {
            self.revision = rev;
        }
        let handle = cf(self.db, CF_LEASE_KEYS);
        for key in &keys {
            self.batch.delete_cf(handle, lease_key_entry(req.id, key));
        }
        self.batch
            .delete_cf(cf(self.db, CF_LEASES), lease_key(req.id));
        self.lease_overlay.insert(req.id, false);
        self.leases_changed = true;
        Ok(LeaseRevokeResponse {
            header: self.header(),
        })
    }
}
