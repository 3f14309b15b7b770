//! Durable state of a member, all in one RocksDB instance.
//!
//! One database, several column families, one shared write-ahead log: the Raft
//! log and vote, and the MVCC state machine with its leases and auth state.
//! [`schema`] lists every column family and key. Sharing the
//! WAL lets one fsync cover a whole batch of log appends (group commit), and lets
//! every state-machine apply be a single atomic `WriteBatch`.

pub mod alarm;
mod apply;
pub mod auth;
mod compaction;
pub mod hash;
pub mod lease;
pub mod log_store;
pub mod members;
pub mod meta_latch;
pub mod mvcc;
#[cfg(test)]
mod mvcc_tests;
pub mod schema;
pub mod snapshot;
pub mod snapshot_stream;
pub mod state_machine;
pub mod txn_walk;

pub use apply::TokenChange;

pub(crate) use apply::txn_puts;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rocksdb::ColumnFamilyDescriptor;
use rocksdb::Options;
use rocksdb::DB;

pub use log_store::LogStore;
pub use mvcc::Mvcc;
pub use state_machine::StateMachineStore;

use schema::{ALL_CFS, CF_RAFT_LOG};

/// Open (or create) the member's database under `dir/db`.
pub fn open_db(dir: &Path) -> anyhow::Result<Arc<DB>> {
    let path = dir.join("db");
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Group commit is ours (see log_store): writes go to the WAL unsynced and one
    // flush_wal(true) syncs a whole batch; never let RocksDB buffer the WAL itself.
    opts.set_manual_wal_flush(false);
    opts.increase_parallelism(2);
    opts.set_keep_log_file_num(4);
    let cfs = ALL_CFS.iter().map(|name| {
        let mut cf_opts = Options::default();
        if *name == CF_RAFT_LOG {
            // Log entries are written once, read soon, deleted in ranges.
            cf_opts.set_write_buffer_size(32 << 20);
        }
        ColumnFamilyDescriptor::new(*name, cf_opts)
    });
    let db = DB::open_cf_descriptors(&opts, &path, cfs)
        .with_context(|| format!("cannot open the database at {}", path.display()))?;
    Ok(Arc::new(db))
}

/// The column family handle for `name`; all of them are created by [`open_db`].
pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name)
        .unwrap_or_else(|| panic!("column family {name} is created when the database opens"))
}

pub(crate) fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Bytes the member's database takes on disk (what Status reports as the db
/// size, and what the space quota limits).
pub fn disk_size(data_dir: &Path) -> u64 {
    fn walk(dir: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    walk(&data_dir.join("db"))
}
