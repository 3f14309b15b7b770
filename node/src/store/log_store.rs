//! The Raft log and vote, on RocksDB.
//!
//! Durability contract (openraft's): `save_vote` returns only once the vote is on
//! disk; `append` makes entries readable at once and reports `io_completed` only
//! once they are on disk. Appends are written to RocksDB unsynced and handed to a
//! syncer thread that issues one `flush_wal(sync)` for every append batch that
//! arrived while the previous fsync ran: group commit, one fsync per batch.

use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::sync::mpsc;
use std::sync::Arc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use rocksdb::Direction;
use rocksdb::IteratorMode;
use rocksdb::WriteBatch;
use rocksdb::WriteOptions;
use rocksdb::DB;

use super::cf;
use super::io_err;
use super::schema::CF_RAFT_LOG;
use super::schema::CF_RAFT_META;
use crate::metrics::Metrics;
use crate::raft::codec;
use crate::raft::Entry;
use crate::raft::LogId;
use crate::raft::TypeConfig;
use crate::raft::Vote;

use super::schema::{KEY_CLUSTER_ID, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE};

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    syncer: mpsc::Sender<IOFlushed<TypeConfig>>,
}

impl LogStore {
    /// `metrics` counts the fsyncs and the append batches they made durable.
    pub fn new(db: Arc<DB>, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel::<IOFlushed<TypeConfig>>();
        let sync_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("raftkv-log-sync".into())
            .spawn(move || group_commit_loop(sync_db, rx, metrics))
            .expect("spawning the log sync thread");
        SYNC_THREADS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(thread);
        Self { db, syncer: tx }
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        read_meta(&self.db, key)
    }

    fn put_meta_synced<T: serde::Serialize>(&self, key: &[u8], value: &T) -> io::Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db
            .put_cf_opt(
                cf(&self.db, CF_RAFT_META),
                key,
                codec::encode(value)?,
                &opts,
            )
            .map_err(io_err)
    }
}

pub(crate) fn read_meta<T: serde::de::DeserializeOwned>(
    db: &DB,
    key: &[u8],
) -> io::Result<Option<T>> {
    match db.get_cf(cf(db, CF_RAFT_META), key).map_err(io_err)? {
        Some(bytes) => codec::decode(&bytes).map(Some),
        None => Ok(None),
    }
}

/// Write one of this member's own `raft_meta` values, synced: what it
/// records about itself (an epoch, a fence, a removal) must survive a crash.
pub(crate) fn write_meta<T: serde::Serialize>(
    db: &DB,
    key: &[u8],
    value: &T,
) -> anyhow::Result<()> {
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    db.put_cf_opt(cf(db, CF_RAFT_META), key, codec::encode(value)?, &opts)?;
    Ok(())
}

/// Records the cluster this member belongs to, synced: a member that forgot it
/// after a crash could be adopted by another cluster.
pub(crate) fn persist_cluster_id(db: &DB, id: u64) -> anyhow::Result<()> {
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    db.put_cf_opt(
        cf(db, CF_RAFT_META),
        KEY_CLUSTER_ID,
        codec::encode(&id)?,
        &opts,
    )?;
    Ok(())
}

/// Every log sync thread started. Each ends once the last `LogStore` clone
/// is dropped, and drops its handle on the database as it goes, which closes
/// the database if that was the last one. The process waits for them before
/// it exits ([`join_sync_threads`]): exiting while a thread still closes (or
/// syncs) a database tears RocksDB's static state down under it, and the
/// process aborts ("pthread lock: Invalid argument", SIGABRT) instead of
/// exiting with its code; a removed member once exited so in CI.
static SYNC_THREADS: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Wait, up to `timeout`, for every log sync thread to end; call once the
/// async runtime is gone (it holds the `LogStore`s). Whether they all ended.
pub fn join_sync_threads(timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    let threads = std::mem::take(
        &mut *SYNC_THREADS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    for thread in threads {
        while !thread.is_finished() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = thread.join();
    }
    true
}

/// The syncer thread: wait for one pending append, take every other one queued
/// behind it, make them all durable with a single fsync, then report them all.
fn group_commit_loop(
    db: Arc<DB>,
    rx: mpsc::Receiver<IOFlushed<TypeConfig>>,
    metrics: Arc<Metrics>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let started = std::time::Instant::now();
        let result = db.flush_wal(true);
        if result.is_ok() {
            // Counted before anything is reported durable, so a write that was
            // acknowledged is always already counted (the durability test's
            // premise: acknowledged writes <= fsyncs on a quorum).
            metrics.record_log_fsync(batch.len() as u64, started.elapsed());
        }
        for callback in batch {
            callback.io_completed(result.as_ref().map(|_| ()).map_err(io_err));
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let from = index_key(start);
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            cf(&self.db, CF_RAFT_LOG),
            IteratorMode::From(&from, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(io_err)?;
            let index = u64::from_be_bytes(key.as_ref().try_into().map_err(io_err)?);
            if !range.contains(&index) {
                break;
            }
            out.push(codec::decode::<Entry>(&value)?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged: Option<LogId> = self.meta(KEY_LAST_PURGED)?;
        let last = self
            .db
            .iterator_cf(cf(&self.db, CF_RAFT_LOG), IteratorMode::End)
            .next()
            .transpose()
            .map_err(io_err)?;
        let last_log_id = match last {
            Some((_, value)) => Some(codec::decode::<Entry>(&value)?.log_id()),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        self.put_meta_synced(KEY_VOTE, vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        // Not synced: after a crash the committed index is learned again from the
        // leader; persisting it only lets a restart re-apply without waiting.
        let bytes = codec::encode(&committed)?;
        self.db
            .put_cf(cf(&self.db, CF_RAFT_META), KEY_COMMITTED, bytes)
            .map_err(io_err)
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let log_cf = cf(&self.db, CF_RAFT_LOG);
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(log_cf, index_key(entry.index()), codec::encode(&entry)?);
        }
        self.db.write(batch).map_err(io_err)?;
        self.syncer
            .send(callback)
            .map_err(|_| io::Error::other("the log sync thread has stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = last_log_id.map(|id| id.index() + 1).unwrap_or(0);
        self.db
            .delete_range_cf(
                cf(&self.db, CF_RAFT_LOG),
                index_key(from),
                index_key(u64::MAX),
            )
            .map_err(io_err)?;
        // A truncation must be durable before new entries at the same indexes are
        // acknowledged; those are synced by the next append's fsync, which covers
        // this write too because the WAL is ordered.
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            cf(&self.db, CF_RAFT_META),
            KEY_LAST_PURGED,
            codec::encode(&log_id)?,
        );
        batch.delete_range_cf(
            cf(&self.db, CF_RAFT_LOG),
            index_key(0),
            index_key(log_id.index() + 1),
        );
        self.db.write(batch).map_err(io_err)
    }
}
