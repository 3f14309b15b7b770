//! What the store holds about members beyond Raft's membership: the name and
//! client URLs each member published through the log (`SetMemberAttributes`),
//! as etcd keeps them beside its Raft configuration.

use prost::Message;
use rocksdb::DB;

use super::cf;
use super::schema::member_attr_key;
use super::schema::CF_SM_META;
use crate::proto::raftkvpb::MemberAttributes;
use crate::raft::NodeId;

/// The attributes member `id` published; `None` if it has not published any
/// yet (a member added but not started) or they cannot be read.
pub fn attributes(db: &DB, id: NodeId) -> Option<MemberAttributes> {
    let bytes = db.get_cf(cf(db, CF_SM_META), member_attr_key(id)).ok()??;
    MemberAttributes::decode(bytes.as_slice()).ok()
}
