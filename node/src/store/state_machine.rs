//! The Raft state machine: applies committed commands to the MVCC store.
//!
//! Each `apply()` call writes one atomic RocksDB batch holding the key changes,
//! the new store revision, the last-applied log id and the membership, so after a
//! crash the state machine is exactly at some applied log id and resumes from it
//! (openraft re-applies the log from there; nothing is replayed from zero).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures::Stream;
use futures::TryStreamExt;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use rocksdb::DB;

use super::apply::{Applier, TokenChange};
use super::cf;
use super::io_err;
use super::schema::CF_SM_META;
use super::snapshot;
use crate::metrics::Metrics;
use crate::proto::mvccpb::Event;
use crate::proto::raftkvpb;
use crate::raft::codec;
use crate::raft::CommandResult;
use crate::raft::LogId;
use crate::raft::Snapshot;
use crate::raft::SnapshotMeta;
use crate::raft::StoredMembership;
use crate::raft::TypeConfig;

use super::schema::{KEY_LAST_APPLIED, KEY_MEMBERSHIP};

/// Who hears what the state machine applied, once it is durable: the
/// member's in-memory state that follows the store (watchers, the leader's
/// lease deadlines, auth tokens). The store only announces; the modules that
/// keep that state sit above it and listen, so the store imports none of them.
pub trait AppliedListener: Send + Sync + 'static {
    /// Committed changes, in revision order.
    fn events(&self, events: Vec<Event>);
    /// Leases were granted or revoked.
    fn leases_changed(&self);
    /// Auth tokens were issued or revoked, in this order.
    fn tokens_changed(&self, changes: Vec<TokenChange>);
    /// A snapshot replaced the whole state: the revisions it skipped were
    /// never announced, and any lease may have changed.
    fn state_replaced(&self);
}

#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<DB>,
    snapshot_dir: PathBuf,
    metrics: Arc<Metrics>,
    listener: Arc<dyn AppliedListener>,
}

impl StateMachineStore {
    pub fn new(
        db: Arc<DB>,
        snapshot_dir: PathBuf,
        metrics: Arc<Metrics>,
        listener: Arc<dyn AppliedListener>,
    ) -> Self {
        Self {
            db,
            snapshot_dir,
            metrics,
            listener,
        }
    }

    /// Write the applier's pending changes with the log position they bring the
    /// state machine to, as one atomic batch.
    fn commit(
        &self,
        applier: &mut Applier<'_>,
        last_applied: &Option<LogId>,
        membership: &Option<StoredMembership>,
    ) -> io::Result<()> {
        let mut batch = applier.take_batch();
        let meta = cf(&self.db, CF_SM_META);
        batch.put_cf(meta, KEY_LAST_APPLIED, codec::encode(last_applied)?);
        if let Some(m) = membership {
            batch.put_cf(meta, KEY_MEMBERSHIP, codec::encode(m)?);
        }
        self.db.write(batch).map_err(io_err)?;
        // Only committed changes reach watchers and the leader's lease timers.
        self.listener.events(std::mem::take(&mut applier.events));
        if std::mem::take(&mut applier.leases_changed) {
            self.listener.leases_changed();
        }
        if !applier.token_changes.is_empty() {
            self.listener
                .tokens_changed(std::mem::take(&mut applier.token_changes));
        }
        Ok(())
    }
}

/// Read the last-applied log id and membership recorded by the state machine.
pub fn applied_state(db: &DB) -> io::Result<(Option<LogId>, StoredMembership)> {
    let meta = cf(db, CF_SM_META);
    let last_applied = match db.get_cf(meta, KEY_LAST_APPLIED).map_err(io_err)? {
        Some(b) => codec::decode(&b)?,
        None => None,
    };
    Ok((last_applied, super::members::applied_membership(db)?))
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = std::fs::File;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        applied_state(&self.db)
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let started = Instant::now();
        let db = self.db.clone();
        let mut applier = Applier::new(&db);
        let mut last_applied: Option<LogId> = None;
        let mut membership: Option<StoredMembership> = None;
        let mut replies = Vec::new();
        let mut count = 0u64;
        while let Some((entry, responder)) = entries.try_next().await? {
            let result = match &entry.payload {
                EntryPayload::Blank => CommandResult::default(),
                EntryPayload::Normal(cmd) => {
                    if applier.needs_clean_db(&cmd.0) && !applier.is_clean() {
                        self.commit(&mut applier, &last_applied, &membership)?;
                    }
                    let result = applier.apply(&cmd.0);
                    if let Some(raftkvpb::command_result::Result::Error(e)) = &result.result {
                        if e.code == tonic::Code::Internal as i32 {
                            // A storage failure, not a bad request: stop applying
                            // (openraft stops this member) rather than commit a
                            // partial change.
                            return Err(io::Error::other(e.message.clone()));
                        }
                    }
                    CommandResult(result)
                }
                EntryPayload::Membership(m) => {
                    if !applier.is_clean() {
                        // The members it drops are found in the database.
                        self.commit(&mut applier, &last_applied, &membership)?;
                    }
                    applier.membership(m)?;
                    membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                    CommandResult(raftkvpb::CommandResult {
                        result: Some(raftkvpb::command_result::Result::Empty(raftkvpb::Empty {})),
                    })
                }
            };
            last_applied = Some(entry.log_id);
            count += 1;
            if let Some(responder) = responder {
                replies.push((responder, result));
            }
        }
        if last_applied.is_some() {
            self.commit(&mut applier, &last_applied, &membership)?;
        }
        // Reply only once the changes are visible to readers of the store.
        for (responder, result) in replies {
            responder.send(result);
        }
        self.metrics.record_apply(count, started.elapsed());
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: std::fs::File,
    ) -> io::Result<()> {
        let db = self.db.clone();
        let dir = self.snapshot_dir.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || snapshot::install(&db, &dir, &meta, snapshot))
            .await
            .map_err(io_err)??;
        self.listener.state_replaced();
        tracing::info!("installed a snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let dir = self.snapshot_dir.clone();
        let latest = tokio::task::spawn_blocking(move || snapshot::latest(&dir))
            .await
            .map_err(io_err)??;
        Ok(latest.map(|(meta, file)| Snapshot {
            meta,
            snapshot: file,
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = std::fs::File;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let db = self.db.clone();
        let dir = self.snapshot_dir.clone();
        let (meta, path) = tokio::task::spawn_blocking(move || snapshot::build(&db, &dir))
            .await
            .map_err(io_err)??;
        tracing::info!(last_log_id = ?meta.last_log_id, path = %path.display(), "built a snapshot");
        Ok(Snapshot {
            meta,
            snapshot: std::fs::File::open(path)?,
        })
    }
}
