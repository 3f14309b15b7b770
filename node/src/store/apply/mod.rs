//! Applying commands to the state machine, as a chain of appliers: one
//! [`Applier`] per `apply()` call of the state machine, whose `apply` hands
//! each command to the part that knows it: [`kv`] (put, delete, the overlay
//! reads and writes every part goes through), [`txn`] (compares and
//! branches), [`compact`], [`lease`], [`auth`], [`alarm`] and [`members`]
//! (what members publish, and the membership). Reading state the parts need (leases, users, alarms) is
//! the business of the modules below (`store::lease`, `store::auth`,
//! `store::alarm`); applying changes to it is here.
//!
//! An Applier's changes go into one RocksDB `WriteBatch` and, until that batch
//! is written, into an in-memory overlay, so later operations in the same batch
//! (and later ops of the same txn) read what earlier ones wrote. Every request
//! that changes a key bumps the store revision exactly once, as in etcd.

mod alarm;
mod auth;
mod compact;
mod kv;
mod lease;
mod members;
mod txn;

pub(crate) use txn::txn_puts;
use txn::txn_reads_history;

use crate::proto::etcdserverpb::*;
use crate::proto::mvccpb::Event;
use crate::proto::mvccpb::KeyValue;
use crate::proto::raftkvpb;
use crate::store::cf;
use crate::store::mvcc;
use crate::store::mvcc::View;
use crate::store::schema;
use crate::store::schema::CF_SM_META;
use rocksdb::WriteBatch;
use rocksdb::DB;
use std::collections::BTreeMap;

pub(crate) struct Applier<'a> {
    db: &'a DB,
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
    lease_overlay: BTreeMap<i64, bool>,
    /// Whether this batch granted or revoked a lease (the leader's lease
    /// timers then re-read the lease table).
    pub leases_changed: bool,
    /// Auth tokens issued and revoked in this batch, in order, for every
    /// member's memory.
    pub token_changes: Vec<TokenChange>,
    /// A NOSPACE alarm is raised: refuse writes that add data.
    no_space: bool,
    /// Whether auth is enabled, and its revision, as the database holds them
    /// (read once a batch, when a stamped command first asks).
    auth_seen: Option<(bool, u64)>,
    /// An auth change is in the batch: the database's auth state is stale
    /// until the batch is written.
    auth_pending: bool,
    /// The ids of the applied membership, once read (see `members`).
    members: Option<std::collections::BTreeSet<crate::raft::NodeId>>,
}

/// What an applied command does to the auth tokens members keep in memory.
/// As etcd: a password change or a user's deletion ends that user's tokens,
/// and turning auth off (or on) ends every token.
#[derive(Debug, PartialEq)]
pub enum TokenChange {
    Issued { token: String, user: String },
    UserRevoked(String),
    AllRevoked,
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
            token_changes: Vec::new(),
            no_space: crate::store::alarm::space_alarm_raised(db),
            auth_seen: None,
            auth_pending: false,
            members: None,
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
        self.auth_seen = None;
        self.auth_pending = false;
        std::mem::take(&mut self.batch)
    }

    /// Whether applying `cmd` needs the database to hold every earlier change
    /// (reads of past revisions, compaction and auth state do not look at the
    /// overlay).
    pub fn needs_clean_db(&self, cmd: &raftkvpb::Command) -> bool {
        use raftkvpb::command::Op;
        if cmd.stamp.is_some() && self.auth_pending {
            return true;
        }
        match &cmd.op {
            Some(Op::Compact(_))
            | Some(Op::LeaseRevoke(_))
            | Some(Op::Auth(_))
            | Some(Op::Alarm(_))
            | Some(Op::SetMemberAttributes(_)) => true,
            Some(Op::Txn(t)) => txn_reads_history(t),
            _ => false,
        }
    }

    /// Apply one command; its error (if any) is the command's result, not a failure
    /// of the state machine: the entry is applied either way.
    pub fn apply(&mut self, cmd: &raftkvpb::Command) -> raftkvpb::CommandResult {
        use raftkvpb::command::Op;
        use raftkvpb::command_result::Result as R;
        if let Some(refused) = cmd.stamp.as_ref().and_then(|stamp| self.stale_auth(stamp)) {
            return raftkvpb::CommandResult {
                result: Some(R::Error(refused.into())),
            };
        }
        let result = match &cmd.op {
            Some(Op::Put(_)) | Some(Op::LeaseGrant(_)) if self.no_space => {
                Err(crate::store::alarm::no_space())
            }
            Some(Op::Txn(t)) if self.no_space && txn_puts(t) => {
                Err(crate::store::alarm::no_space())
            }
            Some(Op::Alarm(req)) => self.alarm(req).map(|()| R::Empty(raftkvpb::Empty {})),
            Some(Op::Put(req)) => self.put_request(req).map(R::Put),
            Some(Op::DeleteRange(req)) => self.delete_request(req).map(R::DeleteRange),
            Some(Op::Txn(req)) => self.txn_request(req).map(R::Txn),
            Some(Op::LeaseGrant(req)) => self.lease_grant(req).map(R::LeaseGrant),
            Some(Op::LeaseRevoke(req)) => self.lease_revoke(req).map(R::LeaseRevoke),
            Some(Op::AuthToken(t)) => {
                self.token_changes.push(TokenChange::Issued {
                    token: t.token.clone(),
                    user: t.user.clone(),
                });
                Ok(R::Empty(raftkvpb::Empty {}))
            }
            Some(Op::Auth(change)) => {
                self.auth_pending = true;
                self.auth_change(change)
                    .map(|()| R::Empty(raftkvpb::Empty {}))
            }
            Some(Op::Compact(req)) => self.compact(req).map(R::Compact),
            Some(Op::SetMemberAttributes(attrs)) => self
                .member_attributes(attrs)
                .map(|()| R::Empty(raftkvpb::Empty {})),
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
}
