//! A reason this member records about itself once, for good, and that its
//! tasks can wait for: a fence (`crate::epoch`) or a removal
//! (`crate::removal`), kept in `raft_meta`, written synced, read at start; or
//! a replaced data dir (`crate::incarnation`), held in memory only (the peers
//! tell it again at the next start).

use std::sync::Mutex;

use rocksdb::DB;
use tokio::sync::Notify;

use super::log_store::{read_meta, write_meta};

pub struct MetaLatch {
    /// Where the reason is persisted; `None`: held in memory only.
    key: Option<&'static [u8]>,
    reason: Mutex<Option<String>>,
    notify: Notify,
}

impl MetaLatch {
    /// The latch stored under `key`, set if a reason was recorded before.
    pub fn load(db: &DB, key: &'static [u8]) -> std::io::Result<Self> {
        Ok(MetaLatch {
            key: Some(key),
            reason: Mutex::new(read_meta::<String>(db, key)?),
            notify: Notify::new(),
        })
    }

    /// A latch held in memory only: unset at every start.
    pub fn in_memory() -> Self {
        MetaLatch {
            key: None,
            reason: Mutex::new(None),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.reason.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The recorded reason, if any.
    pub fn get(&self) -> Option<String> {
        self.lock().clone()
    }

    /// Record `reason`, unless one is recorded already (the first stays);
    /// whether this call recorded it. A reason that cannot be persisted
    /// still holds until the process ends.
    pub fn set(&self, db: &DB, reason: String) -> bool {
        {
            let mut recorded = self.lock();
            if recorded.is_some() {
                return false;
            }
            if let Some(key) = self.key {
                if let Err(e) = write_meta(db, key, &reason) {
                    tracing::error!("cannot persist {:?}: {e:#}", String::from_utf8_lossy(key));
                }
            }
            *recorded = Some(reason);
        }
        self.notify.notify_waiters();
        self.notify.notify_one();
        true
    }

    /// Wait until a reason is recorded; the reason.
    pub async fn wait(&self) -> String {
        loop {
            let notified = self.notify.notified();
            if let Some(reason) = self.get() {
                return reason;
            }
            notified.await;
        }
    }
}
