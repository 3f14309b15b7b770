//! Applying commands to the MVCC store: put, delete_range, txn, compact.
//!
//! An [`Applier`] lives for one `apply()` call of the state machine. Its changes
//! go into one RocksDB `WriteBatch` and, until that batch is written, into an
//! in-memory overlay, so later operations in the same batch (and later ops of the
//! same txn) read what earlier ones wrote. Every request that changes a key bumps
//! the store revision exactly once, as in etcd.

use std::collections::BTreeMap;

use prost::Message;
use rocksdb::WriteBatch;
use rocksdb::DB;

use super::cf;
use super::mvcc;
use super::mvcc::KeyRange;
use super::mvcc::View;
use super::schema;
use super::schema::CF_KV;
use super::schema::CF_KV_EVENTS;
use super::schema::CF_KV_HISTORY;
use super::schema::CF_SM_META;
use super::txn_walk::leaf_ops;
use crate::errors::ApiError;
use crate::proto::etcdserverpb::compare::CompareResult;
use crate::proto::etcdserverpb::compare::CompareTarget;
use crate::proto::etcdserverpb::compare::TargetUnion;
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::response_op::Response;
use crate::proto::etcdserverpb::*;
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::Event;
use crate::proto::mvccpb::KeyValue;
use crate::proto::raftkvpb;

pub(crate) struct Applier<'a> {
    pub(super) db: &'a DB,
    pub batch: WriteBatch,
    /// Current state of keys changed in this batch: `None` = deleted.
    overlay: BTreeMap<Vec<u8>, Option<KeyValue>>,
    pub revision: i64,
    pub compacted: i64,
    /// Changes made so far, in order, for watchers (published once committed).
    pub events: Vec<Event>,
    /// (revision, next sub-revision) of the last recorded event.
    event_sub: (i64, u32),
    /// Leases granted (true) or revoked (false) in this batch.
    pub(super) lease_overlay: BTreeMap<i64, bool>,
    /// Whether this batch granted or revoked a lease (the leader's lease
    /// timers then re-read the lease table).
    pub leases_changed: bool,
    /// Auth tokens issued in this batch: (token, user), for every member's memory.
    pub tokens: Vec<(String, String)>,
    /// A NOSPACE alarm is raised: refuse writes that add data.
    pub(super) no_space: bool,
}

impl<'a> Applier<'a> {
    pub fn new(db: &'a DB) -> Self {
        let live = View { db, snap: None };
        let revision = mvcc::read_i64(&live, schema::KEY_REVISION).unwrap_or(1);
        let compacted = mvcc::read_i64(&live, schema::KEY_COMPACT_REVISION).unwrap_or(0);
        Self {
            db,
            batch: WriteBatch::default(),
            overlay: BTreeMap::new(),
            revision,
            compacted,
            events: Vec::new(),
            event_sub: (0, 0),
            lease_overlay: BTreeMap::new(),
            leases_changed: false,
            tokens: Vec::new(),
            no_space: super::alarm::space_alarm_raised(db),
        }
    }

    /// True when nothing is pending (the overlay matches the database).
    pub fn is_clean(&self) -> bool {
        self.batch.is_empty()
    }

    /// Take the pending batch (with the revision recorded) and clear the overlay.
    pub fn take_batch(&mut self) -> WriteBatch {
        let meta = cf(self.db, CF_SM_META);
        self.batch
            .put_cf(meta, schema::KEY_REVISION, self.revision.to_be_bytes());
        self.batch.put_cf(
            meta,
            schema::KEY_COMPACT_REVISION,
            self.compacted.to_be_bytes(),
        );
        self.overlay.clear();
        self.lease_overlay.clear();
        std::mem::take(&mut self.batch)
    }

    /// Whether applying `cmd` needs the database to hold every earlier change
    /// (reads of past revisions and compaction do not look at the overlay).
    pub fn needs_clean_db(cmd: &raftkvpb::Command) -> bool {
        use raftkvpb::command::Op;
        match &cmd.op {
            Some(Op::Compact(_))
            | Some(Op::LeaseRevoke(_))
            | Some(Op::Auth(_))
            | Some(Op::Alarm(_)) => true,
            Some(Op::Txn(t)) => txn_reads_history(t),
            _ => false,
        }
    }

    /// Apply one command; its error (if any) is the command's result, not a failure
    /// of the state machine: the entry is applied either way.
    pub fn apply(&mut self, cmd: &raftkvpb::Command) -> raftkvpb::CommandResult {
        use raftkvpb::command::Op;
        use raftkvpb::command_result::Result as R;
        let result = match &cmd.op {
            Some(Op::Put(_)) | Some(Op::LeaseGrant(_)) if self.no_space => {
                Err(super::alarm::no_space())
            }
            Some(Op::Txn(t)) if self.no_space && txn_puts(t) => Err(super::alarm::no_space()),
            Some(Op::Alarm(req)) => self.alarm(req).map(|()| R::Empty(raftkvpb::Empty {})),
            Some(Op::Put(req)) => self.put_request(req).map(R::Put),
            Some(Op::DeleteRange(req)) => self.delete_request(req).map(R::DeleteRange),
            Some(Op::Txn(req)) => self.txn_request(req).map(R::Txn),
            Some(Op::LeaseGrant(req)) => self.lease_grant(req).map(R::LeaseGrant),
            Some(Op::LeaseRevoke(req)) => self.lease_revoke(req).map(R::LeaseRevoke),
            Some(Op::AuthToken(t)) => {
                self.tokens.push((t.token.clone(), t.user.clone()));
                Ok(R::Empty(raftkvpb::Empty {}))
            }
            Some(Op::Auth(change)) => self
                .auth_change(change)
                .map(|()| R::Empty(raftkvpb::Empty {})),
            Some(Op::Compact(req)) => self.compact(req).map(R::Compact),
            Some(Op::SetMemberAttributes(attrs)) => {
                self.batch.put_cf(
                    cf(self.db, CF_SM_META),
                    schema::member_attr_key(attrs.id),
                    attrs.encode_to_vec(),
                );
                Ok(R::Empty(raftkvpb::Empty {}))
            }
            None => Ok(R::Empty(raftkvpb::Empty {})),
        };
        raftkvpb::CommandResult {
            result: Some(result.unwrap_or_else(|e| R::Error(e.into()))),
        }
    }

    pub(super) fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision: self.revision,
            ..Default::default()
        })
    }

    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, ApiError> {
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
    fn current(&self, range: &KeyRange) -> Result<Vec<KeyValue>, ApiError> {
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
    fn record_event(&mut self, kind: EventType, kv: KeyValue) {
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

    fn write_put(&mut self, kv: KeyValue) {
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

    fn write_delete(&mut self, key: &[u8], revision: i64) {
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

    fn put_request(&mut self, req: &PutRequest) -> Result<PutResponse, ApiError> {
        let rev = self.revision + 1;
        let resp = self.put_at(req, rev)?;
        self.revision = rev;
        Ok(PutResponse {
            header: self.header(),
            ..resp
        })
    }

    fn put_at(&mut self, req: &PutRequest, rev: i64) -> Result<PutResponse, ApiError> {
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

    fn delete_request(
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

    fn range_at(&self, req: &RangeRequest) -> Result<RangeResponse, ApiError> {
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

    /// A txn is decided before it runs, as in etcd: every compare on the path
    /// (nested ones included) is evaluated against the state before the txn, and
    /// every op on that path is checked, so the txn either applies whole or not
    /// at all.
    fn txn_request(&mut self, req: &TxnRequest) -> Result<TxnResponse, ApiError> {
        let mut path = Vec::new();
        self.decide(req, &mut path)?;
        self.check_ops(req, &mut path.iter().copied())?;
        let rev = self.revision + 1;
        let mut wrote = false;
        let mut resp = self.txn_at(req, rev, &mut path.into_iter(), &mut wrote)?;
        if wrote {
            self.revision = rev;
        }
        resp.header = self.header();
        Ok(resp)
    }

    /// Record, in pre-order, which branch each txn on the taken path takes.
    fn decide(&self, req: &TxnRequest, path: &mut Vec<bool>) -> Result<(), ApiError> {
        let mut succeeded = true;
        for c in &req.compare {
            if !self.compare_holds(c)? {
                succeeded = false;
                break;
            }
        }
        path.push(succeeded);
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        for op in ops {
            if let Some(Request::RequestTxn(t)) = &op.request {
                self.decide(t, path)?;
            }
        }
        Ok(())
    }

    /// Fail now, before anything is written, if an op on the path would fail.
    fn check_ops(
        &self,
        req: &TxnRequest,
        path: &mut impl Iterator<Item = bool>,
    ) -> Result<(), ApiError> {
        let (_, ops) = branch(req, path)?;
        for op in ops {
            match &op.request {
                Some(Request::RequestPut(p)) => {
                    let prev = self.get(&p.key)?;
                    if (p.ignore_value || p.ignore_lease) && prev.is_none() {
                        return Err(ApiError::key_not_found());
                    }
                    let lease = if p.ignore_lease {
                        prev.map_or(0, |kv| kv.lease)
                    } else {
                        p.lease
                    };
                    if lease != 0 && !self.lease_exists(lease)? {
                        return Err(ApiError::lease_not_found());
                    }
                }
                Some(Request::RequestRange(r)) => {
                    if r.revision > self.revision {
                        return Err(ApiError::future_revision());
                    }
                    if r.revision > 0 && r.revision < self.compacted {
                        return Err(ApiError::compacted());
                    }
                }
                Some(Request::RequestTxn(t)) => self.check_ops(t, path)?,
                Some(Request::RequestDeleteRange(_)) => {}
                None => {
                    return Err(ApiError::new(
                        tonic::Code::InvalidArgument,
                        "etcdserver: empty request op",
                    ))
                }
            }
        }
        Ok(())
    }

    fn txn_at(
        &mut self,
        req: &TxnRequest,
        rev: i64,
        path: &mut impl Iterator<Item = bool>,
        wrote: &mut bool,
    ) -> Result<TxnResponse, ApiError> {
        let (succeeded, ops) = branch(req, path)?;
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => {
                    let mut out = self.range_at(r)?;
                    out.header = self.header();
                    Response::ResponseRange(out)
                }
                Some(Request::RequestPut(p)) => {
                    let mut out = self.put_at(p, rev)?;
                    *wrote = true;
                    out.header = Some(ResponseHeader {
                        revision: rev,
                        ..Default::default()
                    });
                    Response::ResponsePut(out)
                }
                Some(Request::RequestDeleteRange(d)) => {
                    let mut out = self.delete_at(d, rev)?;
                    *wrote |= out.deleted > 0;
                    out.header = Some(ResponseHeader {
                        revision: rev,
                        ..Default::default()
                    });
                    Response::ResponseDeleteRange(out)
                }
                Some(Request::RequestTxn(t)) => {
                    let mut out = self.txn_at(t, rev, path, wrote)?;
                    out.header = Some(ResponseHeader {
                        revision: rev,
                        ..Default::default()
                    });
                    Response::ResponseTxn(out)
                }
                None => {
                    return Err(ApiError::new(
                        tonic::Code::InvalidArgument,
                        "etcdserver: empty request op",
                    ))
                }
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }

    fn compare_holds(&self, c: &Compare) -> Result<bool, ApiError> {
        let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
        let kvs = self.current(&KeyRange::new(&c.key, &c.range_end))?;
        if kvs.is_empty() {
            // A missing key compares as version/revisions/lease 0; a value compare fails.
            return Ok(
                target != CompareTarget::Value && compare_kv(c, target, &KeyValue::default())
            );
        }
        Ok(kvs.iter().all(|kv| compare_kv(c, target, kv)))
    }

    fn compact(&mut self, req: &CompactionRequest) -> Result<CompactionResponse, ApiError> {
        if req.revision <= self.compacted {
            return Err(ApiError::compacted());
        }
        if req.revision > self.revision {
            return Err(ApiError::future_revision());
        }
        super::compaction::compact_history(self.db, &mut self.batch, req.revision)?;
        // Watches may start at the compact revision, not before it.
        self.batch.delete_range_cf(
            cf(self.db, CF_KV_EVENTS),
            schema::event_key(0, 0),
            schema::event_key(req.revision, 0),
        );
        self.compacted = req.revision;
        Ok(CompactionResponse {
            header: self.header(),
        })
    }
}

fn compare_kv(c: &Compare, target: CompareTarget, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ord = match (&c.target_union, target) {
        (Some(TargetUnion::Value(v)), CompareTarget::Value) => {
            kv.value.as_slice().cmp(v.as_slice())
        }
        (Some(TargetUnion::Version(v)), CompareTarget::Version) => kv.version.cmp(v),
        (Some(TargetUnion::CreateRevision(v)), CompareTarget::Create) => kv.create_revision.cmp(v),
        (Some(TargetUnion::ModRevision(v)), CompareTarget::Mod) => kv.mod_revision.cmp(v),
        (Some(TargetUnion::Lease(v)), CompareTarget::Lease) => kv.lease.cmp(v),
        // A compare whose operand is missing or of another kind compares with zero.
        (_, CompareTarget::Value) => kv.value.as_slice().cmp(&[]),
        (_, CompareTarget::Version) => kv.version.cmp(&0),
        (_, CompareTarget::Create) => kv.create_revision.cmp(&0),
        (_, CompareTarget::Mod) => kv.mod_revision.cmp(&0),
        (_, CompareTarget::Lease) => kv.lease.cmp(&0),
    };
    match CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
        CompareResult::NotEqual => ord != Ordering::Equal,
    }
}

/// Read-only txns are evaluated here, by the same code that applies them,
/// so a read inside a txn answers exactly as it would in a replicated one.
impl super::Mvcc {
    /// Evaluate a txn that only reads, without proposing it.
    pub fn read_only_txn(
        &self,
        req: &crate::proto::etcdserverpb::TxnRequest,
    ) -> Result<crate::proto::etcdserverpb::TxnResponse, ApiError> {
        use crate::proto::raftkvpb;
        use raftkvpb::command_result::Result as Applied;
        let mut applier = Applier::new(self.db());
        let cmd = raftkvpb::Command {
            op: Some(raftkvpb::command::Op::Txn(req.clone())),
        };
        match applier.apply(&cmd).result {
            Some(Applied::Txn(resp)) => Ok(resp),
            Some(Applied::Error(e)) => Err(e.into()),
            _ => Err(ApiError::internal("unexpected result of a read-only txn")),
        }
    }
}

/// The branch the decided `path` takes at this txn: (succeeded, its ops).
fn branch<'t>(
    req: &'t TxnRequest,
    path: &mut impl Iterator<Item = bool>,
) -> Result<(bool, &'t [RequestOp]), ApiError> {
    let succeeded = path
        .next()
        .ok_or_else(|| ApiError::internal("txn path too short"))?;
    Ok((
        succeeded,
        if succeeded {
            &req.success
        } else {
            &req.failure
        },
    ))
}

pub(crate) fn txn_puts(t: &TxnRequest) -> bool {
    leaf_ops(t).any(|op| matches!(op.request, Some(Request::RequestPut(_))))
}

fn txn_reads_history(t: &TxnRequest) -> bool {
    leaf_ops(t).any(|op| matches!(&op.request, Some(Request::RequestRange(r)) if r.revision != 0))
}
