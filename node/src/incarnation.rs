//! A data dir's incarnation: which copy of a member's state may serve as that
//! member (issue 17, finding 5).
//!
//! Raft assumes a voter never forgets what it acknowledged. A voter whose data
//! dir was wiped, and that comes back under its old id, has forgotten both its
//! log and its vote: it would grant its vote to a candidate that lacks a
//! committed entry (and acknowledged entries it never held would then be
//! lost), or vote twice in one term. etcd leaves this to the operator; here
//! the cluster notices.
//!
//! Every data dir gets a random incarnation when it is first opened. A member
//! publishes it with its name and client URLs (`SetMemberAttributes`), and
//! the first one published is the member's record until the member is removed
//! (`store::apply::members` refuses another, and forgets the record when the
//! membership drops the member). Every peer request carries the sender's
//! incarnation and the one the sender recorded for the receiver; see
//! [`judge`]:
//!
//! - a receiver that recorded another incarnation for the sender refuses it,
//!   naming the record ([`RECORDED_METADATA`]): the sender's vote requests,
//!   forwarded proposals and membership probes get nowhere;
//! - a receiver whose own incarnation is not the one the sender recorded
//!   refuses the request: the wiped member takes no appends and grants no
//!   votes, so nothing it answers is counted.
//!
//! The replaced member learns it from a refusal of its own request (a
//! (pre-)vote, or the probe a member without a leader sends, see
//! `node::membership_probe`), and stops, saying what to do instead: remove
//! the member, reset the data dir and add it again ([`advice`]). An empty
//! `--join` member (an operator's pod whose volume was lost) holds nothing to
//! reset: it keeps waiting to be added, refusing the leader that names its
//! old incarnation, and says why it is not ready ([`Incarnation::awaiting`]),
//! so whoever runs it (the operator) can remove the member and add it again.
//! A replaced member counts a refusal
//! such a refusal only when its own store does not hold its incarnation as
//! recorded ([`proves_replaced`]): a peer lagging behind a removal and
//! re-addition under the same id still holds the old record. The verdict is
//! not persisted: at the next start the peers say it again.
//!
//! Not covered: a member wiped before it published its first incarnation (a
//! few hundred milliseconds after it first hears from a leader), and records
//! written by a member of a version before incarnations.

use rocksdb::DB;

use crate::errors::NoLongerMember;
use crate::raft::NodeId;
use crate::store::log_store::{read_meta, write_meta};
use crate::store::members::recorded_incarnation;
use crate::store::meta_latch::MetaLatch;
use crate::store::schema::KEY_INCARNATION;

/// gRPC metadata key on a refusal of a sender whose incarnation is not the
/// one recorded for it: the recorded incarnation.
pub const RECORDED_METADATA: &str = "raftkv-recorded-incarnation";

/// This data dir's incarnation, made (and persisted, synced) the first time.
pub fn load_or_create(db: &DB) -> anyhow::Result<u64> {
    if let Some(own) = read_meta::<u64>(db, KEY_INCARNATION)? {
        return Ok(own);
    }
    let own = std::iter::repeat_with(rand::random::<u64>)
        .find(|v| *v != 0)
        .expect("an endless supply of random numbers");
    write_meta(db, KEY_INCARNATION, &own)?;
    Ok(own)
}

/// What a receiver makes of a peer request's incarnations.
#[derive(Debug, PartialEq, Eq)]
pub enum Judgement {
    Accept,
    /// The sender's data dir is not the one recorded for it.
    SenderReplaced {
        recorded: u64,
    },
    /// This member's data dir is not the one the sender recorded for it.
    ReceiverReplaced {
        named: u64,
    },
}

/// Judge a request from a sender with incarnation `from`, recorded here as
/// `recorded_for_sender` (0: no record), that names `to` for this member
/// (0: the sender has no record), whose own incarnation is `own`.
pub fn judge(own: u64, recorded_for_sender: u64, from: u64, to: u64) -> Judgement {
    if recorded_for_sender != 0 && recorded_for_sender != from {
        Judgement::SenderReplaced {
            recorded: recorded_for_sender,
        }
    } else if to != 0 && to != own {
        Judgement::ReceiverReplaced { named: to }
    } else {
        Judgement::Accept
    }
}

/// Whether a peer that recorded `named` for this member proves that this data
/// dir (incarnation `own`, recorded in its own store as `own_recorded`) no
/// longer serves as the member. A store that holds `own` as recorded was the
/// member's, and a peer naming another is behind a removal and re-addition.
pub fn proves_replaced(own: u64, own_recorded: u64, named: u64) -> bool {
    named != 0 && named != own && own_recorded != own
}

/// What `raftkv serve` fails with when its data dir was replaced.
pub fn advice(id: NodeId, reason: &str) -> NoLongerMember {
    NoLongerMember(format!(
        "member {id:x}'s data dir is not the one the cluster knows ({reason}): it was wiped \
         or replaced while the member was still in the membership, and a member that forgot \
         its log must not vote in its old place. To bring this machine back: \
         `etcdctl member remove {id:x}`, run `raftkv reset --data-dir DIR`, and add it again \
         as a new member (MemberAdd)"
    ))
}

/// This data dir's incarnation, and whether a peer proved it replaced.
pub struct Incarnation {
    id: NodeId,
    own: u64,
    replaced: MetaLatch,
    /// An empty `--join` member refused by a leader's record: why.
    awaiting: std::sync::Mutex<Option<String>>,
}

impl Incarnation {
    pub fn new(id: NodeId, own: u64) -> Self {
        Incarnation {
            id,
            own,
            replaced: MetaLatch::in_memory(),
            awaiting: std::sync::Mutex::new(None),
        }
    }

    pub fn own(&self) -> u64 {
        self.own
    }

    /// Judge a peer request's incarnations (see [`judge`]).
    pub fn judge(&self, db: &DB, from_id: NodeId, from: u64, to: u64) -> Judgement {
        judge(self.own, recorded_incarnation(db, from_id), from, to)
    }

    /// Peer `peer` refused this member, having recorded `named` for it.
    pub fn peer_named(&self, db: &DB, peer: NodeId, named: u64) {
        if !proves_replaced(self.own, recorded_incarnation(db, self.id), named) {
            return;
        }
        let reason = format!(
            "member {peer:x} recorded its data dir as incarnation {named:x}; this one is {:x}",
            self.own
        );
        if self.replaced.set(db, reason.clone()) {
            tracing::error!("this member's data dir was replaced: {reason}");
        }
    }

    /// An empty `--join` member refused a replication from `leader`, which
    /// recorded `named` for it: it waits to be removed and added again.
    pub fn leader_named(&self, leader: NodeId, named: u64) {
        let why = format!(
            "member {leader:x} replicates to member {:x} as data dir incarnation {named:x}, \
             this one is {:x} (empty): remove the member and add it again",
            self.id, self.own
        );
        *self.awaiting.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    /// Why an empty `--join` member is not added yet, if a leader's record
    /// refused it (see [`Incarnation::leader_named`]).
    pub fn awaiting(&self) -> Option<String> {
        self.awaiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Wait until a peer proved this data dir replaced; why.
    pub async fn wait(&self) -> String {
        self.replaced.wait().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_with_another_incarnation_than_recorded_is_refused() {
        assert_eq!(judge(7, 5, 6, 0), Judgement::SenderReplaced { recorded: 5 });
        // Its own naming of us does not matter then.
        assert_eq!(judge(7, 5, 6, 7), Judgement::SenderReplaced { recorded: 5 });
    }

    #[test]
    fn a_receiver_that_is_not_the_one_the_sender_recorded_refuses() {
        assert_eq!(judge(7, 5, 5, 8), Judgement::ReceiverReplaced { named: 8 });
    }

    #[test]
    fn no_record_on_either_side_judges_no_one() {
        assert_eq!(judge(7, 0, 6, 0), Judgement::Accept);
        assert_eq!(judge(7, 5, 5, 7), Judgement::Accept);
        assert_eq!(judge(7, 0, 0, 0), Judgement::Accept);
    }

    #[test]
    fn only_a_store_that_never_recorded_its_own_incarnation_is_proven_replaced() {
        // Wiped: the store holds nothing, or another member's record.
        assert!(proves_replaced(7, 0, 5));
        assert!(proves_replaced(7, 5, 5));
        // Recorded as itself: the peer is behind a removal and re-addition.
        assert!(!proves_replaced(7, 7, 5));
        // A peer without a record, or naming us, proves nothing.
        assert!(!proves_replaced(7, 0, 0));
        assert!(!proves_replaced(7, 0, 7));
    }

    #[test]
    fn an_incarnation_is_made_once_per_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open_db(dir.path()).unwrap();
        let first = load_or_create(&db).unwrap();
        assert_ne!(first, 0);
        assert_eq!(load_or_create(&db).unwrap(), first);
        drop(db);
        let db = crate::store::open_db(dir.path()).unwrap();
        assert_eq!(load_or_create(&db).unwrap(), first);
    }
}
