//! What the store holds about members beyond Raft's membership: the name,
//! client URLs and data-dir incarnation each member published through the log
//! (`SetMemberAttributes`), as etcd keeps them beside its Raft configuration;
//! and the membership the state machine applied last.

use std::io;

use prost::Message;
use rocksdb::IteratorMode;
use rocksdb::DB;

use super::cf;
use super::io_err;
use super::schema::member_attr_key;
use super::schema::CF_SM_META;
use super::schema::KEY_MEMBERSHIP;
use super::schema::MEMBER_ATTR_PREFIX;
use crate::proto::raftkvpb::MemberAttributes;
use crate::raft::codec;
use crate::raft::NodeId;
use crate::raft::StoredMembership;

/// The attributes member `id` published; `None` if it has not published any
/// yet (a member added but not started) or they cannot be read.
pub fn attributes(db: &DB, id: NodeId) -> Option<MemberAttributes> {
    let bytes = db.get_cf(cf(db, CF_SM_META), member_attr_key(id)).ok()??;
    MemberAttributes::decode(bytes.as_slice()).ok()
}

/// The data-dir incarnation recorded for member `id` (see
/// `crate::incarnation`); 0 if none is.
pub fn recorded_incarnation(db: &DB, id: NodeId) -> u64 {
    attributes(db, id).map_or(0, |a| a.incarnation)
}

/// Every member id that has attributes recorded.
pub fn recorded_ids(db: &DB) -> io::Result<Vec<NodeId>> {
    let iter = db.iterator_cf(
        cf(db, CF_SM_META),
        IteratorMode::From(MEMBER_ATTR_PREFIX, rocksdb::Direction::Forward),
    );
    let mut ids = Vec::new();
    for item in iter {
        let (key, _) = item.map_err(io_err)?;
        let Some(id) = key.strip_prefix(MEMBER_ATTR_PREFIX) else {
            break;
        };
        let id: [u8; 8] = id
            .try_into()
            .map_err(|_| io_err(format!("bad member attributes key {key:?}")))?;
        ids.push(NodeId::from_be_bytes(id));
    }
    Ok(ids)
}

/// The membership the state machine applied last (empty before the first).
pub fn applied_membership(db: &DB) -> io::Result<StoredMembership> {
    match db
        .get_cf(cf(db, CF_SM_META), KEY_MEMBERSHIP)
        .map_err(io_err)?
    {
        Some(b) => codec::decode(&b),
        None => Ok(StoredMembership::default()),
    }
}
