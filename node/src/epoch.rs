//! The cluster epoch, and fencing a member that an epoch has left behind.
//!
//! A solo recovery (see `recovery`) makes one surviving member a cluster of its
//! own. It keeps the cluster id (clients and the operator keep working) and
//! bumps the epoch, stored next to the cluster id and carried in every peer
//! request header. Members from the old epoch still believe in the old
//! membership and may hold stale or divergent logs, so:
//!
//! - a request from an older epoch is refused, with a message saying what to do;
//! - a member that learns of a newer epoch of its own cluster from a member of
//!   its membership, reached at the peer URL recorded for it (that member
//!   refuses it, or claims the newer epoch and confirms it when asked, see
//!   `node::epoch_claim`) fences itself: Raft is shut down, every peer request
//!   is refused and clients get errors saying why, so two old members restarted
//!   with old data cannot form a quorum between them. The fence is persisted;
//!   only `raftkv reset` (wiping the member) lifts it.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use rocksdb::DB;

use crate::store::log_store::read_meta;
use crate::store::log_store::write_meta as persist;
use crate::store::meta_latch::MetaLatch;

use crate::store::schema::{KEY_EPOCH, KEY_FENCED};

/// gRPC metadata key on an epoch refusal: the refusing member's epoch.
pub const EPOCH_METADATA: &str = "raftkv-epoch";

/// How a peer's epoch relates to ours (both of the same cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Same,
    /// The peer was left behind by a recovery: refuse it.
    PeerOlder,
    /// We were left behind: refuse and fence ourselves.
    PeerNewer,
}

pub fn judge(mine: u64, theirs: u64) -> Verdict {
    match theirs.cmp(&mine) {
        std::cmp::Ordering::Equal => Verdict::Same,
        std::cmp::Ordering::Less => Verdict::PeerOlder,
        std::cmp::Ordering::Greater => Verdict::PeerNewer,
    }
}

/// The message a member from an older epoch gets.
pub fn refusal(me: u64, mine: u64, from: u64, theirs: u64) -> String {
    format!(
        "epoch mismatch: member {from:x} is at epoch {theirs}, but member {me:x} is at epoch {mine} \
         (the cluster went through a solo recovery); member {from:x} holds stale data: \
         reset it with `raftkv reset --data-dir DIR` and add it again as a new member"
    )
}

/// This member's epoch and fence, shared by the peer client and server.
pub struct EpochState {
    value: AtomicU64,
    fenced: MetaLatch,
}

impl EpochState {
    pub fn load(db: &DB) -> std::io::Result<Self> {
        Ok(EpochState {
            value: AtomicU64::new(read_meta::<u64>(db, KEY_EPOCH)?.unwrap_or(0)),
            fenced: MetaLatch::load(db, KEY_FENCED)?,
        })
    }

    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Acquire)
    }

    /// Adopt the epoch of the cluster a new member joins.
    pub fn adopt(&self, db: &DB, epoch: u64) -> anyhow::Result<()> {
        persist(db, KEY_EPOCH, &epoch)?;
        self.value.store(epoch, Ordering::Release);
        Ok(())
    }

    /// Why this member is fenced, if it is.
    pub fn fenced(&self) -> Option<String> {
        self.fenced.get()
    }

    /// Fence this member (once; later calls keep the first reason).
    pub fn fence(&self, db: &DB, reason: String) {
        if self.fenced.set(db, reason.clone()) {
            tracing::error!("fencing this member: {reason}");
        }
    }

    /// Wait until this member is fenced.
    pub async fn wait_fenced(&self) {
        self.fenced.wait().await;
    }

    /// The reason given for a member left behind by `newer`.
    pub fn left_behind(&self, peer: u64, newer: u64) -> String {
        format!(
            "member {peer:x} is at epoch {newer}, this member at epoch {}: the cluster was \
             recovered without this member, whose data is stale; reset it with \
             `raftkv reset --data-dir DIR` and add it again as a new member",
            self.get()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_peers_are_refused_and_newer_ones_fence_us() {
        assert_eq!(judge(1, 1), Verdict::Same);
        assert_eq!(judge(1, 0), Verdict::PeerOlder);
        assert_eq!(judge(0, 1), Verdict::PeerNewer);
        let msg = refusal(1, 1, 2, 0);
        assert!(msg.contains("epoch 0") && msg.contains("epoch 1") && msg.contains("raftkv reset"));
    }
}
