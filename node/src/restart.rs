//! Restarting this member's process in place, after its stored Raft state was
//! rewritten under it (online solo recovery, Initialize from a backup).
//!
//! openraft keeps the Raft state it loaded at startup in memory, so a rewrite
//! only takes effect in a new Raft instance, and everything that serves
//! requests holds the old one. Re-executing the same binary with the same
//! arguments and environment is the simplest way to get a fresh one: the pid
//! stays (supervisors, and the test harness, keep their handle), the listening
//! sockets and RocksDB's files are close-on-exec, and the new process starts
//! from the rewritten state exactly as after any restart.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use rocksdb::DB;

/// After `delay` (time for the reply that announced it to go out), sync the
/// database and replace this process with a fresh run of the same command.
pub fn reexec_after(db: std::sync::Arc<DB>, delay: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        if let Err(e) = db.flush_wal(true) {
            tracing::error!("syncing the database before restarting: {e}");
        }
        let exe = match std::env::current_exe() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("cannot restart: no path to this binary: {e}");
                std::process::exit(1);
            }
        };
        tracing::info!("restarting this member with its rewritten state");
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .exec();
        // exec returns only on failure; exiting lets a supervisor restart us.
        tracing::error!("cannot restart: {err}");
        std::process::exit(1);
    });
}
