//! A member removed from the cluster stops, as etcd's do (issue 17, finding
//! 6), instead of running on and campaigning to members that no longer count
//! it.
//!
//! The leader stops replicating to a member once it appends the membership
//! that removes it, so the member never sees that entry. It learns of its
//! removal from a peer instead: a member that misses its leader asks the
//! members it knows (`Node::probe_membership`; a voter's (pre-)vote requests
//! ask too), and a member whose membership does not list the asker refuses
//! it, naming the log index of that membership ([`REMOVED_METADATA`]).
//!
//! Such a refusal counts only when the asker's own membership lists it and
//! the refusing member's is later. A peer that has not caught up with the
//! asker's addition refuses it too, with an earlier membership; and a member
//! still replaying the log up to its own addition holds a membership without
//! itself, and must not conclude anything from it. (Applying a membership
//! without itself proves nothing for the same reason: a member re-added with
//! the id it had before replays its own earlier removal.)
//!
//! The reason is persisted, and a member that finds it at start refuses to
//! start: its data belongs to a member the cluster no longer has. The way back
//! is a new member: `raftkv reset` the data dir, then MemberAdd it again.
//!
//! Not caught: a member that did receive the entry removing it (it then
//! neither campaigns nor counts a refusal at the same index); it stays idle
//! until stopped, as before.

use std::sync::Mutex;

use rocksdb::DB;

use crate::errors::NoLongerMember;
use crate::raft::NodeId;
use crate::store::meta_latch::MetaLatch;
use crate::store::schema::KEY_REMOVED;

/// gRPC metadata key on a refusal of a peer that is not a member: the log
/// index of the refusing member's membership.
pub const REMOVED_METADATA: &str = "raftkv-not-member-at";

/// Whether (and why) this member was removed; shared by the peer client, the
/// member and `serve`.
pub struct Removal {
    /// The log index of the membership this member holds (the last it
    /// appended, committed or not), and whether it lists this member.
    own_membership: Mutex<(u64, bool)>,
    removed: MetaLatch,
}

impl Removal {
    /// This data dir's removal state: removed already, if it was.
    pub fn load(db: &DB) -> std::io::Result<Self> {
        Ok(Removal {
            own_membership: Mutex::new((0, false)),
            removed: MetaLatch::load(db, KEY_REMOVED)?,
        })
    }

    /// Why this member was removed, if it was.
    pub fn removed(&self) -> Option<String> {
        self.removed.get()
    }

    /// What `raftkv serve` fails with when it will not start, or stops.
    pub fn advice(id: NodeId, reason: &str) -> NoLongerMember {
        NoLongerMember(format!(
            "member {id:x} was removed from the cluster ({reason}); its data dir cannot serve \
             again: to bring this machine back, run `raftkv reset --data-dir DIR` and add it \
             again as a new member (MemberAdd)"
        ))
    }

    /// The membership this member holds is at `index`, and lists it or not.
    pub fn note_membership(&self, index: u64, listed: bool) {
        *self.own_membership.lock().expect("removal lock") = (index, listed);
    }

    /// A peer refused this member as not a member of its membership at
    /// `their_index`: removed, if ours lists us and theirs is later.
    pub fn peer_refused(&self, db: &DB, peer: NodeId, their_index: u64) {
        let (ours, listed) = *self.own_membership.lock().expect("removal lock");
        if listed && their_index > ours {
            self.mark(
                db,
                format!(
                    "member {peer:x}'s membership at log index {their_index} no longer lists it; \
                     this member's is at {ours}"
                ),
            );
        }
    }

    /// Record the removal (once) and wake [`Removal::wait`].
    fn mark(&self, db: &DB, reason: String) {
        if self.removed.set(db, reason.clone()) {
            tracing::error!("this member was removed from the cluster: {reason}");
        }
    }

    /// Wait until this member is removed; why.
    pub async fn wait(&self) -> String {
        self.removed.wait().await
    }
}
