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
use crate::node::Node;
use crate::proto::etcdserverpb::LeaseRevokeRequest;
use crate::proto::raftkvpb;
use crate::raft::Command;
use crate::store::lease::all_leases;

/// How often the leader looks for expired leases.
const TICK: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct LeaseTimers {
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
    pub fn note_change(&self) {
        self.changes.fetch_add(1, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TimerState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Bring the deadlines in line with the lease table, as leader of `term`.
    fn sync(&self, db: &DB, term: u64) -> Result<(), ApiError> {
        let changes = self.changes.load(Ordering::Acquire);
        let mut st = self.lock();
        if st.term == term && st.seen_changes == changes {
            return Ok(());
        }
        let fresh_term = st.term != term;
        let now = Instant::now();
        let leases = all_leases(db)?;
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

    fn clear(&self) {
        let mut st = self.lock();
        st.term = 0;
        st.deadlines.clear();
    }

    fn expired(&self) -> Vec<i64> {
        let now = Instant::now();
        self.lock()
            .deadlines
            .iter()
            .filter(|(_, (d, _))| *d <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Keep-alive on the leader: restart the lease's TTL; its TTL, or None if
    /// it does not exist.
    pub fn renew(&self, node: &Node, id: i64) -> Result<Option<i64>, ApiError> {
        self.sync(&node.db, node.current_term())?;
        let mut st = self.lock();
        Ok(st.deadlines.get_mut(&id).map(|(deadline, ttl)| {
            *deadline = Instant::now() + Duration::from_secs(*ttl as u64);
            *ttl
        }))
    }

    /// (remaining seconds, granted TTL), or None if the lease does not exist.
    pub fn remaining(&self, node: &Node, id: i64) -> Result<Option<(i64, i64)>, ApiError> {
        self.sync(&node.db, node.current_term())?;
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

/// The leader's expiry loop: runs for the life of the member.
pub async fn run_expiry(node: Arc<Node>) {
    loop {
        tokio::time::sleep(TICK).await;
        if !node.is_leader() {
            node.lease_timers.clear();
            continue;
        }
        let term = node.current_term();
        if let Err(e) = node.lease_timers.sync(&node.db, term) {
            tracing::warn!("reading leases: {e}");
            continue;
        }
        for id in node.lease_timers.expired() {
            let cmd = Command(raftkvpb::Command {
                op: Some(raftkvpb::command::Op::LeaseRevoke(LeaseRevokeRequest {
                    id,
                })),
            });
            match node.propose_local(cmd).await {
                Ok(_) => tracing::debug!(lease = %format!("{id:x}"), "lease expired and revoked"),
                // Not leader any more, or a transient failure: the next tick (or
                // the next leader) tries again.
                Err(e) => {
                    tracing::debug!(lease = %format!("{id:x}"), "revoking an expired lease: {:?}", e)
                }
            }
        }
    }
}
