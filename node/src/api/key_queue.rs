//! A queue of keys under a prefix, ordered by create revision: what etcd's
//! Lock and Election are built on (as its clientv3 `concurrency` package does).
//!
//! A contender puts `<prefix><lease id in hex>` with its lease, if that key does
//! not exist yet; its place in line is the key's create revision. It owns the
//! lock (or leads) once no key under the prefix is older; until then it waits
//! for the deletion of the key just ahead of it (released, resigned, or expired
//! with its lease), then looks again. Waiting uses the watch hub, subscribed
//! before each look, so no deletion can slip between looking and waiting.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;

use tonic::metadata::MetadataMap;

use crate::auth::{Caller, Need};
use crate::errors::ApiError;
use crate::node::Node;
use crate::proto::etcdserverpb::compare::*;
use crate::proto::etcdserverpb::range_request::SortOrder;
use crate::proto::etcdserverpb::range_request::SortTarget;
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::response_op::Response;
use crate::proto::etcdserverpb::*;
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::KeyValue;
use crate::proto::raftkvpb::command::Op;
use crate::proto::raftkvpb::command_result::Result as Applied;
use crate::store::mvcc::prefix_end;

pub fn queue_prefix(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// The end of the range `prefix` starts (every key under it).
pub fn queue_end(prefix: &[u8]) -> Vec<u8> {
    prefix_end(prefix).unwrap_or_else(|| vec![0])
}

/// A caller found allowed to `need` [key, range_end) (one key with an empty
/// `range_end`). The queue writes made for it carry its auth stamp and, if
/// the auth state moved on before they applied, are checked again the same
/// way (`Node::propose_as`).
pub struct Allowed {
    caller: Caller,
    md: MetadataMap,
    key: Vec<u8>,
    range_end: Vec<u8>,
    need: Need,
}

/// Refuse the call unless its caller may `need` [key, range_end). etcd builds
/// Lock and Election from KV calls made with the caller's credentials, so each
/// of their RPCs needs what those calls need: a lock or a campaign writes its
/// queue, Unlock, Proclaim and Resign write their key, Leader and Observe read
/// the queue.
pub async fn authorize(
    node: &Node,
    md: &MetadataMap,
    key: &[u8],
    range_end: &[u8],
    need: Need,
) -> Result<Allowed, ApiError> {
    let caller = node.caller(md).await?;
    caller.require(key, range_end, need)?;
    Ok(Allowed {
        caller,
        md: md.clone(),
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        need,
    })
}

/// Replicate `op` for a caller `authorize` allowed.
pub async fn propose(node: &Node, allowed: &Allowed, op: Op) -> Result<Applied, ApiError> {
    let Allowed {
        caller,
        md,
        key,
        range_end,
        need,
    } = allowed;
    node.propose_as(caller.clone(), md, op, |caller, _| {
        caller.require(key, range_end, *need)
    })
    .await
}

/// A contender's queue (prefix) and its own key in it, once the caller is
/// known to be allowed to write there. `what` names the queue in errors.
pub async fn contender(
    node: &Node,
    md: &MetadataMap,
    name: &[u8],
    lease: i64,
    what: &str,
) -> Result<(Vec<u8>, Vec<u8>, Allowed), ApiError> {
    if name.is_empty() {
        return Err(ApiError::new(
            tonic::Code::InvalidArgument,
            format!("raftkv: {what} name is empty"),
        ));
    }
    let prefix = queue_prefix(name);
    let allowed = authorize(node, md, &prefix, &queue_end(&prefix), Need::Write).await?;
    let mut key = prefix.clone();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    Ok((prefix, key, allowed))
}

/// Propose a txn for a caller `authorize` allowed, and return its response.
pub async fn txn(node: &Node, allowed: &Allowed, req: TxnRequest) -> Result<TxnResponse, ApiError> {
    match propose(node, allowed, Op::Txn(req)).await? {
        Applied::Txn(t) => Ok(t),
        _ => Err(ApiError::internal("unexpected result of a txn")),
    }
}

/// Join the queue: create `key` with `value` and `lease` unless it exists.
/// Returns the key as it now is (its create revision is its place in line).
pub async fn enqueue(
    node: &Node,
    allowed: &Allowed,
    key: &[u8],
    value: &[u8],
    lease: i64,
) -> Result<KeyValue, ApiError> {
    let absent = Compare {
        key: key.to_vec(),
        target: CompareTarget::Create as i32,
        result: CompareResult::Equal as i32,
        target_union: Some(TargetUnion::CreateRevision(0)),
        ..Default::default()
    };
    let put = RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        })),
    };
    let get = RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    };
    let resp = txn(
        node,
        allowed,
        TxnRequest {
            compare: vec![absent],
            success: vec![put, get.clone()],
            failure: vec![get],
        },
    )
    .await?;
    let read = resp.responses.into_iter().find_map(|r| match r.response {
        Some(Response::ResponseRange(range)) => range.kvs.into_iter().next(),
        _ => None,
    });
    read.ok_or_else(|| ApiError::internal("the queued key vanished"))
}

/// The oldest key under `prefix` created before `before` (any, when 0).
pub async fn oldest_before(
    node: &Node,
    prefix: &[u8],
    before: i64,
) -> Result<Option<KeyValue>, ApiError> {
    node.read_barrier().await?;
    let req = RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix).unwrap_or_else(|| vec![0]),
        limit: 1,
        sort_order: if before > 0 {
            SortOrder::Descend
        } else {
            SortOrder::Ascend
        } as i32,
        sort_target: SortTarget::Create as i32,
        max_create_revision: if before > 0 { before - 1 } else { 0 },
        ..Default::default()
    };
    Ok(node.mvcc().range(&req)?.kvs.into_iter().next())
}

/// Wait until no key under `prefix` is older than `own`, the contender's key
/// created at revision `mine`. If `own` goes first (its lease expired, or it
/// was deleted), the contender has lost its place: "session expired", as
/// etcd's concurrency package says, never the lock or the leadership.
pub async fn wait_for_turn(
    node: &Arc<Node>,
    prefix: &[u8],
    own: &[u8],
    mine: i64,
) -> Result<(), ApiError> {
    loop {
        let mut changes = node.watch_hub().subscribe();
        let ahead = oldest_before(node, prefix, mine).await?;
        // Read after `oldest_before`'s read barrier: as current as the queue.
        if !still_owned(node, own, mine)? {
            return Err(session_expired());
        }
        let Some(ahead) = ahead else {
            return Ok(());
        };
        wait_for_delete(&mut changes, &[&ahead.key, own]).await;
    }
}

/// Whether `key` still is the one created at `create_revision`.
fn still_owned(node: &Node, key: &[u8], create_revision: i64) -> Result<bool, ApiError> {
    let req = RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    };
    let kvs = node.mvcc().range(&req)?.kvs;
    Ok(kvs
        .first()
        .is_some_and(|kv| kv.create_revision == create_revision))
}

/// etcd's concurrency.ErrSessionExpired: the waiter's key is gone.
fn session_expired() -> ApiError {
    ApiError::new(tonic::Code::Unknown, "session expired")
}

/// Return once one of `keys` is deleted, or when changes may have been
/// missed (the hub's empty resync batch after a snapshot install, whose
/// changes are never broadcast; a receiver that lagged): look again.
async fn wait_for_delete(
    changes: &mut tokio::sync::broadcast::Receiver<Arc<Vec<crate::proto::mvccpb::Event>>>,
    keys: &[&[u8]],
) {
    loop {
        match changes.recv().await {
            Ok(events) if events.is_empty() => return,
            Ok(events) => {
                let deleted = events.iter().any(|e| {
                    e.r#type == EventType::Delete as i32
                        && e.kv
                            .as_ref()
                            .is_some_and(|kv| keys.contains(&kv.key.as_slice()))
                });
                if deleted {
                    return;
                }
            }
            Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
        }
    }
}

/// Delete `key` if it still is the one created at `create_revision`.
pub async fn delete_if_owner(
    node: &Node,
    allowed: &Allowed,
    key: &[u8],
    create_revision: i64,
) -> Result<bool, ApiError> {
    let owner = Compare {
        key: key.to_vec(),
        target: CompareTarget::Create as i32,
        result: CompareResult::Equal as i32,
        target_union: Some(TargetUnion::CreateRevision(create_revision)),
        ..Default::default()
    };
    let delete = RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    };
    let resp = txn(
        node,
        allowed,
        TxnRequest {
            compare: vec![owner],
            success: vec![delete],
            failure: vec![],
        },
    )
    .await?;
    Ok(resp.succeeded)
}
