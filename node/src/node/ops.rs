//! Work on this member's own database that the Maintenance and Admin services
//! ask for: hashing, defragmenting, backups, and the offline rewrites (solo
//! recovery, restoring a backup) that end in a restart.
//!
//! Those that read or rewrite the whole database run on a blocking thread
//! (`produce_backup` is called from one); each hands back what the handler
//! reports, and the handlers never hold the database themselves.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use crate::backup;
use crate::errors::ApiError;
use crate::raft::NodeId;
use crate::recovery::SoloReport;
use crate::store;

use super::Node;

/// A blocking task that did not finish (it panicked, or the runtime is
/// shutting down): its outcome is unknown, which etcd reports as internal.
fn lost(e: tokio::task::JoinError) -> ApiError {
    ApiError::internal(e)
}

impl Node {
    /// Rewrite the database's files compactly (etcd's Defragment); the space
    /// quota measures again afterwards.
    pub async fn defragment(&self) -> Result<(), ApiError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || store::hash::defragment(&db))
            .await
            .map_err(lost)??;
        self.disk_usage.invalidate();
        Ok(())
    }

    /// etcd's Hash: a checksum of everything this member stores.
    pub async fn hash_all(&self) -> Result<u32, ApiError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || store::hash::hash_all(&db))
            .await
            .map_err(lost)?
    }

    /// etcd's HashKV up to `revision` (0: the current one): the hash, the
    /// compaction revision and the revision hashed up to.
    pub async fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), ApiError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || store::hash::hash_kv(&db, revision))
            .await
            .map_err(lost)?
    }

    /// A scratch directory in the data dir for building a backup.
    pub fn backup_scratch(&self) -> PathBuf {
        self.data_dir
            .join(format!("backup-{}.tmp", rand::random::<u64>()))
    }

    /// Write a backup of this member's state to `target` (see `crate::backup`).
    pub async fn save_backup(&self, target: PathBuf) -> std::io::Result<backup::Summary> {
        let db = self.db.clone();
        let scratch = self.backup_scratch();
        tokio::task::spawn_blocking(move || backup::save(&db, &scratch, &target))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Stream a backup of this member's state to `sink` in chunks (see
    /// `backup::produce`). Blocking: call it from a blocking thread.
    pub fn produce_backup(
        &self,
        sink: impl FnMut(Vec<u8>, u64) -> std::io::Result<bool>,
    ) -> std::io::Result<(u64, String)> {
        backup::produce(&self.db, &self.backup_scratch(), sink)
    }

    /// Durably record that this member belongs to cluster `id`, and answer
    /// with it from now on.
    pub fn adopt_cluster_id(&self, id: u64) -> anyhow::Result<()> {
        store::log_store::persist_cluster_id(&self.db, id)?;
        self.remember_cluster_id(id);
        Ok(())
    }

    /// Rewrite the stopped member's Raft state into a one-member cluster (see
    /// `crate::recovery`). Raft must be shut down first; restart afterwards.
    pub async fn recover_solo(&self) -> Result<anyhow::Result<SoloReport>, ApiError> {
        let db = self.db.clone();
        let id = self.id;
        tokio::task::spawn_blocking(move || crate::recovery::recover_solo(&db, id))
            .await
            .map_err(lost)
    }

    /// Fill the stopped member's database from the backup at `path` as the
    /// state of a new cluster `members`. Raft must be shut down first; restart
    /// afterwards.
    pub async fn restore_backup(
        &self,
        path: &Path,
        members: &BTreeMap<NodeId, String>,
        cluster_id: u64,
    ) -> Result<anyhow::Result<()>, ApiError> {
        let db = self.db.clone();
        let id = self.id;
        let path = path.to_path_buf();
        let members = members.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            backup::load_into(&db, &path, &mut |_| {})?;
            crate::recovery::record_restored_state(&db, id, &members, cluster_id)
        })
        .await
        .map_err(lost)
    }

    /// After `delay`, sync the database and re-execute this process, so a new
    /// Raft instance starts from the rewritten state (see `crate::restart`).
    pub fn restart_after(&self, delay: Duration) {
        crate::restart::reexec_after(self.db.clone(), delay);
    }
}
