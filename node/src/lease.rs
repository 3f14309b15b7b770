//! Lease deadlines, kept by the leader alone.
//!
//! Grant and revoke go through the log, but *when* a lease runs out is decided
//! by the leader only: it keeps a deadline per lease, renews it on keep-alive,
//! and proposes a revoke when it passes, so every member deletes the same keys
//! at the same revision. A new leader starts every lease's full TTL afresh (as
//! etcd does without checkpointing): a leader change can only lengthen a lease,
//! never cut one short.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use rocksdb::DB;

use crate::errors::ApiError;
use crate::store::lease::all_leases;

/// The leader's lease deadlines, brought in line with the lease table (in
/// `db`) whenever it changed or the term did.
pub struct LeaseTimers {
    db: Arc<DB>,
    /// Bumped by the state machine whenever a lease is granted or revoked.
    changes: AtomicU64,
    state: Mutex<TimerState>,
}

#[derive(Default)]
struct TimerState {
    /// The leader term these deadlines belong to (0: none kept).
    term: u64,
    seen_changes: u64,
    /// Lease id -> (deadline, granted TTL in seconds).
    deadlines: HashMap<i64, (Instant, i64)>,
}

impl LeaseTimers {
    pub fn new(db: Arc<DB>) -> Self {
        Self {
            db,
            changes: AtomicU64::default(),
            state: Mutex::default(),
        }
    }

    pub fn note_change(&self) {
        self.changes.fetch_add(1, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TimerState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Bring the deadlines in line with the lease table, as leader of `term`.
    pub fn sync(&self, term: u64) -> Result<(), ApiError> {
        let changes = self.changes.load(Ordering::Acquire);
        let mut st = self.lock();
        if st.term == term && st.seen_changes == changes {
            return Ok(());
        }
        let fresh_term = st.term != term;
        let now = Instant::now();
        let leases = all_leases(&self.db)?;
        let mut next = HashMap::with_capacity(leases.len());
        for (id, ttl) in leases {
            let deadline = match st.deadlines.get(&id) {
                Some((d, _)) if !fresh_term => *d,
                _ => now + Duration::from_secs(ttl.max(0) as u64),
            };
            next.insert(id, (deadline, ttl));
        }
        st.deadlines = next;
        st.term = term;
        st.seen_changes = changes;
        Ok(())
    }

    /// Forget every deadline: this member is not the leader.
    pub fn clear(&self) {
        let mut st = self.lock();
        st.term = 0;
        st.deadlines.clear();
    }

    /// The leases whose deadline has passed.
    pub fn expired(&self) -> Vec<i64> {
        let now = Instant::now();
        self.lock()
            .deadlines
            .iter()
            .filter(|(_, (d, _))| *d <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Keep-alive on the leader of `term`: restart the lease's TTL; its TTL,
    /// or None if it does not exist.
    pub fn renew(&self, term: u64, id: i64) -> Result<Option<i64>, ApiError> {
        self.sync(term)?;
        let mut st = self.lock();
        Ok(st.deadlines.get_mut(&id).map(|(deadline, ttl)| {
            *deadline = Instant::now() + Duration::from_secs(*ttl as u64);
            *ttl
        }))
    }

    /// On the leader of `term`: (remaining seconds, granted TTL), or None if
    /// the lease does not exist.
    pub fn remaining(&self, term: u64, id: i64) -> Result<Option<(i64, i64)>, ApiError> {
        self.sync(term)?;
        let st = self.lock();
        Ok(st.deadlines.get(&id).map(|(deadline, ttl)| {
            let left = deadline.saturating_duration_since(Instant::now());
            // etcd rounds the remaining time up to whole seconds.
            (
                left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0),
                *ttl,
            )
        }))
    }
}
