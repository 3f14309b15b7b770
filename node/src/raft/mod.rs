//! Raft's vocabulary: openraft's type configuration, what a log entry carries,
//! and the encoding of openraft's messages. Everything that moves them lives
//! above the store: `crate::transport` sends them to other members,
//! `api::peer` receives them, and `node::Raft` is openraft running on our
//! state machine.
//!
//! What a log entry carries is a [`Command`]: a protobuf message (an etcd request
//! or a raftkv-internal one). openraft needs it to be serde-serializable; we
//! serialize it as its protobuf bytes, so the on-disk log and the wire carry the
//! same stable, versionable encoding as the etcd API itself.

pub mod codec;

use std::collections::BTreeMap;
use std::fmt;

use prost::Message;
use serde::Deserialize;
use serde::Serialize;

use crate::proto::raftkvpb;

/// A member's Raft identity; also its etcd member ID. Never 0.
pub type NodeId = u64;

/// What Raft knows about a member: where its peer port is.
///
/// The member's name and client URLs are not part of the Raft membership: like
/// etcd, a member publishes them through the log once it runs (see
/// `MemberAttributes`), because they are not known when the member is added.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub peer_url: String,
}

/// The membership's member records for `id -> peer URL` (a bootstrap's
/// `--initial-cluster`, a restored cluster's voters).
pub fn members_at(peer_urls: &BTreeMap<NodeId, String>) -> BTreeMap<NodeId, Member> {
    peer_urls
        .iter()
        .map(|(id, url)| {
            let member = Member {
                peer_url: url.clone(),
            };
            (*id, member)
        })
        .collect()
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = Member,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, NodeId>,
);

pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, Member>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, std::fs::File>;

/// A state-machine command: the application payload of a Raft log entry.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Command(pub raftkvpb::Command);

impl Command {
    /// A command a member proposes on its own account (lease expiry, alarms,
    /// member attributes): no caller, nothing to stamp.
    pub fn new(op: raftkvpb::command::Op) -> Self {
        Command(raftkvpb::Command {
            op: Some(op),
            stamp: None,
        })
    }

    /// A command a client asked for, stamped with the auth state its
    /// permissions were checked against (see `AuthStamp`).
    pub fn stamped(op: raftkvpb::command::Op, stamp: raftkvpb::AuthStamp) -> Self {
        Command(raftkvpb::Command {
            op: Some(op),
            stamp: Some(stamp),
        })
    }
}

/// The outcome of applying a [`Command`], returned to the proposer.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct CommandResult(pub raftkvpb::CommandResult);

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use raftkvpb::command::Op;
        match &self.0.op {
            Some(Op::Put(p)) => write!(f, "put({} bytes key)", p.key.len()),
            Some(Op::DeleteRange(_)) => write!(f, "delete_range"),
            Some(Op::Txn(t)) => write!(f, "txn({} compares)", t.compare.len()),
            Some(Op::Compact(c)) => write!(f, "compact({})", c.revision),
            Some(Op::SetMemberAttributes(a)) => write!(f, "member_attributes({})", a.id),
            Some(Op::LeaseGrant(l)) => write!(f, "lease_grant({:x}, ttl {})", l.id, l.ttl),
            Some(Op::LeaseRevoke(l)) => write!(f, "lease_revoke({:x})", l.id),
            Some(Op::Auth(_)) => write!(f, "auth_change"),
            Some(Op::AuthToken(_)) => write!(f, "auth_token"),
            Some(Op::Alarm(a)) => write!(f, "alarm({:?})", a.action),
            None => write!(f, "noop"),
        }
    }
}

/// Serialize a protobuf message as a serde byte string.
macro_rules! serde_as_protobuf {
    ($outer:ident, $inner:ty) => {
        impl Serialize for $outer {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0.encode_to_vec())
            }
        }

        impl<'de> Deserialize<'de> for $outer {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let bytes = d.deserialize_byte_buf(codec::BytesVisitor)?;
                <$inner>::decode(bytes.as_slice())
                    .map($outer)
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_as_protobuf!(Command, raftkvpb::Command);
serde_as_protobuf!(CommandResult, raftkvpb::CommandResult);

/// The id `MemberAdd` gives a member: a hash of its peer URL (FNV-1a), never 0.
/// `raftkv serve --join` without `--id` derives the same id from its own URL.
pub fn member_id_for(peer_url: &str) -> NodeId {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in peer_url.trim_end_matches('/').bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    if h == 0 {
        1
    } else {
        h
    }
}

/// A peer URL as etcd accepts one: http or https, a host and a non-zero port.
pub fn valid_peer_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let hostport = rest.trim_end_matches('/');
    match hostport.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_stable_and_ignore_a_trailing_slash() {
        let a = member_id_for("http://127.0.0.1:2380");
        assert_eq!(a, member_id_for("http://127.0.0.1:2380/"));
        assert_ne!(a, member_id_for("http://127.0.0.1:2381"));
        assert_ne!(a, 0);
    }

    #[test]
    fn peer_urls_are_checked() {
        assert!(valid_peer_url("http://10.0.0.1:2380"));
        assert!(valid_peer_url("https://m-0.peers.ns.svc:2380/"));
        assert!(!valid_peer_url("10.0.0.1:2380"));
        assert!(!valid_peer_url("http://10.0.0.1"));
        assert!(!valid_peer_url("http://:2380"));
    }
}
