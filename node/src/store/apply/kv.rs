//! Puts, deletes and ranges, and the overlay every part of the applier reads
//! and writes keys through.

use super::Applier;
use crate::errors::ApiError;
use crate::proto::etcdserverpb::*;
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::Event;
use crate::proto::mvccpb::KeyValue;
use crate::store::cf;
use crate::store::mvcc;
use crate::store::mvcc::KeyRange;
use crate::store::mvcc::View;
use crate::store::schema;
use crate::store::schema::CF_KV;
use crate::store::schema::CF_KV_EVENTS;
use crate::store::schema::CF_KV_HISTORY;
use prost::Message;
use std::collections::BTreeMap;

impl<'a> Applier<'a> {
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, ApiError> {
        if let Some(state) = self.overlay.get(key) {
            return Ok(state.clone());
        }
        match self
            .db
            .get_cf(cf(self.db, CF_KV), key)
            .map_err(ApiError::internal)?
        {
            Some(bytes) => mvcc::decode_kv(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Live keys in `range` as of now, including this batch's changes.
    pub(super) fn current(&self, range: &KeyRange) -> Result<Vec<KeyValue>, ApiError> {
        if let KeyRange::Single(key) = range {
            return Ok(self.get(key)?.into_iter().collect());
        }
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let view = View {
            db: self.db,
            snap: None,
        };
        let mut merged: BTreeMap<Vec<u8>, KeyValue> = mvcc::current_kvs(&view, range)?
            .into_iter()
            .map(|kv| (kv.key.clone(), kv))
            .collect();
        for (key, state) in &self.overlay {
            if range.contains(key) {
                match state {
                    Some(kv) => merged.insert(key.clone(), kv.clone()),
                    None => merged.remove(key),
                };
            }
        }
        Ok(merged.into_values().collect())
    }

    /// Record a change in `kv_events` and for publication to watchers.
    pub(super) fn record_event(&mut self, kind: EventType, kv: KeyValue) {
        let rev = kv.mod_revision;
        if self.event_sub.0 != rev {
            self.event_sub = (rev, 0);
        }
        let sub = self.event_sub.1;
        self.event_sub.1 += 1;
        let event = Event {
            r#type: kind as i32,
            kv: Some(kv),
            prev_kv: None,
        };
        self.batch.put_cf(
            cf(self.db, CF_KV_EVENTS),
            schema::event_key(rev, sub),
            event.encode_to_vec(),
        );
        self.events.push(event);
    }

    pub(super) fn write_put(&mut self, kv: KeyValue) {
        let mut hist = Vec::with_capacity(kv.encoded_len() + 1);
        hist.push(mvcc::HISTORY_PUT);
        kv.encode(&mut hist).expect("Vec has room");
        self.batch.put_cf(
            cf(self.db, CF_KV_HISTORY),
            schema::history_key(&kv.key, kv.mod_revision),
            hist,
        );
        self.batch
            .put_cf(cf(self.db, CF_KV), &kv.key, kv.encode_to_vec());
        self.overlay.insert(kv.key.clone(), Some(kv.clone()));
        self.record_event(EventType::Put, kv);
    }

    pub(super) fn write_delete(&mut self, key: &[u8], revision: i64) {
        self.batch.put_cf(
            cf(self.db, CF_KV_HISTORY),
            schema::history_key(key, revision),
            [mvcc::HISTORY_TOMBSTONE],
        );
        self.batch.delete_cf(cf(self.db, CF_KV), key);
        self.overlay.insert(key.to_vec(), None);
        // etcd's delete event carries the key and the deleting revision.
        let tombstone = KeyValue {
            key: key.to_vec(),
            mod_revision: revision,
            ..Default::default()
        };
        self.record_event(EventType::Delete, tombstone);
    }

    pub(super) fn put_request(&mut self, req: &PutRequest) -> Result<PutResponse, ApiError> {
        let rev = self.revision + 1;
        let resp = self.put_at(req, rev)?;
        self.revision = rev;
        Ok(PutResponse {
            header: self.header(),
            ..resp
        })
    }

    pub(super) fn put_at(&mut self, req: &PutRequest, rev: i64) -> Result<PutResponse, ApiError> {
        let prev = self.get(&req.key)?;
        let (value, lease) = match (&prev, req.ignore_value, req.ignore_lease) {
            (None, true, _) | (None, _, true) => return Err(ApiError::key_not_found()),
            (Some(p), iv, il) => (
                if iv {
                    p.value.clone()
                } else {
                    req.value.clone()
                },
                if il { p.lease } else { req.lease },
            ),
            (None, false, false) => (req.value.clone(), req.lease),
        };
        if lease != 0 && !self.lease_exists(lease)? {
            return Err(ApiError::lease_not_found());
        }
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        self.attach(prev.as_ref(), &kv);
        self.write_put(kv);
        Ok(PutResponse {
            header: None,
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    pub(super) fn delete_request(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, ApiError> {
        let rev = self.revision + 1;
        let resp = self.delete_at(req, rev)?;
        if resp.deleted > 0 {
            self.revision = rev;
        }
        Ok(DeleteRangeResponse {
            header: self.header(),
            ..resp
        })
    }

    pub(super) fn delete_at(
        &mut self,
        req: &DeleteRangeRequest,
        rev: i64,
    ) -> Result<DeleteRangeResponse, ApiError> {
        let victims = self.current(&KeyRange::new(&req.key, &req.range_end))?;
        for kv in &victims {
            self.detach(kv);
            self.write_delete(&kv.key, rev);
        }
        Ok(DeleteRangeResponse {
            header: None,
            deleted: victims.len() as i64,
            prev_kvs: if req.prev_kv { victims } else { Vec::new() },
        })
    }

    pub(super) fn range_at(&self, req: &RangeRequest) -> Result<RangeResponse, ApiError> {
        if req.revision == 0 || req.revision == self.revision {
            let kvs = self.current(&KeyRange::new(&req.key, &req.range_end))?;
            return Ok(mvcc::finish_range(kvs, req));
        }
        // The database is clean here (see needs_clean_db), so it holds all history.
        let view = View {
            db: self.db,
            snap: None,
        };
        mvcc::range_in_view(&view, req, self.revision, self.compacted)
    }
}
