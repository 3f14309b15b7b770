//! Request checks done before anything is proposed, with etcd's errors.
//!
//! These mirror etcd's v3rpc checks: non-empty keys, no value/lease with the
//! matching ignore flag, valid sort options, at most `--max-txn-ops` operations
//! per txn branch, no key written twice (or written and deleted) by one txn, and
//! no request larger than `--max-request-bytes`.
//!
//! The handlers check what clients send; the leader checks again what
//! followers forward ([`forwarded`]), so a command that reaches the log has
//! passed them whichever way it came.

use std::collections::BTreeSet;

use prost::Message;

use crate::errors::ApiError;
use crate::node::Limits;
use crate::proto::etcdserverpb::range_request::SortOrder;
use crate::proto::etcdserverpb::range_request::SortTarget;
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::*;
use crate::proto::raftkvpb::command::Op;
use crate::store::lease::MAX_LEASE_TTL;
use crate::store::mvcc::KeyRange;
use crate::store::txn_walk::{walk, TxnPart};

/// A command another member forwarded for proposal: the checks its handler
/// made, made again by the leader that proposes it.
pub fn forwarded(op: &Op, limits: &Limits) -> Result<(), ApiError> {
    match op {
        Op::Put(req) => size(req, limits).and_then(|()| put(req)),
        Op::DeleteRange(req) => size(req, limits).and_then(|()| delete(req)),
        Op::Txn(req) => size(req, limits).and_then(|()| txn(req, limits)),
        Op::LeaseGrant(req) if req.id <= 0 => Err(ApiError::new(
            tonic::Code::InvalidArgument,
            "raftkv: lease ids are positive",
        )),
        Op::LeaseGrant(req) if req.ttl > MAX_LEASE_TTL => Err(ApiError::new(
            tonic::Code::OutOfRange,
            "etcdserver: too large lease TTL",
        )),
        _ => Ok(()),
    }
}

pub fn size(req: &impl Message, limits: &Limits) -> Result<(), ApiError> {
    if req.encoded_len() > limits.max_request_bytes {
        return Err(ApiError::request_too_large());
    }
    Ok(())
}

pub fn range(req: &RangeRequest) -> Result<(), ApiError> {
    if req.key.is_empty() {
        return Err(ApiError::empty_key());
    }
    if SortOrder::try_from(req.sort_order).is_err()
        || SortTarget::try_from(req.sort_target).is_err()
    {
        return Err(ApiError::new(
            tonic::Code::InvalidArgument,
            "etcdserver: invalid sort option",
        ));
    }
    Ok(())
}

pub fn put(req: &PutRequest) -> Result<(), ApiError> {
    if req.key.is_empty() {
        return Err(ApiError::empty_key());
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(ApiError::value_provided());
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(ApiError::lease_provided());
    }
    Ok(())
}

pub fn delete(req: &DeleteRangeRequest) -> Result<(), ApiError> {
    if req.key.is_empty() {
        return Err(ApiError::empty_key());
    }
    Ok(())
}

pub fn txn(req: &TxnRequest, limits: &Limits) -> Result<(), ApiError> {
    txn_shape(req, limits)?;
    writes_of(&req.success)?;
    writes_of(&req.failure)?;
    Ok(())
}

fn txn_shape(req: &TxnRequest, limits: &Limits) -> Result<(), ApiError> {
    let max = limits.max_txn_ops;
    for part in walk(req) {
        match part {
            TxnPart::Txn(t) => {
                if t.compare.len() > max || t.success.len() > max || t.failure.len() > max {
                    return Err(ApiError::too_many_ops());
                }
                if t.compare.iter().any(|c| c.key.is_empty()) {
                    return Err(ApiError::empty_key());
                }
            }
            TxnPart::Op(op) => match &op.request {
                Some(Request::RequestRange(r)) => range(r)?,
                Some(Request::RequestPut(p)) => put(p)?,
                Some(Request::RequestDeleteRange(d)) => delete(d)?,
                Some(Request::RequestTxn(_)) => {}
                None => {
                    return Err(ApiError::new(
                        tonic::Code::InvalidArgument,
                        "etcdserver: empty request op",
                    ))
                }
            },
        }
    }
    Ok(())
}

/// The keys a list of ops puts and the ranges it deletes; fails when one branch
/// of a txn would write a key twice or both write and delete it. The two
/// branches of a nested txn exclude each other, so they may write the same key.
fn writes_of(ops: &[RequestOp]) -> Result<(BTreeSet<Vec<u8>>, Vec<KeyRange>), ApiError> {
    let mut dels: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(KeyRange::new(&d.key, &d.range_end)),
            _ => None,
        })
        .collect();
    let deleted = |dels: &[KeyRange], k: &[u8]| dels.iter().any(|r| r.contains(k));
    let mut puts = BTreeSet::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (then_puts, then_dels) = writes_of(&t.success)?;
        let (else_puts, else_dels) = writes_of(&t.failure)?;
        for k in &then_puts {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(ApiError::duplicate_key());
            }
        }
        puts.extend(then_puts.iter().cloned());
        for k in else_puts {
            if (puts.contains(&k) && !then_puts.contains(&k)) || deleted(&dels, &k) {
                return Err(ApiError::duplicate_key());
            }
            puts.insert(k);
        }
        dels.extend(then_dels);
        dels.extend(else_dels);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(ApiError::duplicate_key());
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_request_bytes: 1024,
            max_txn_ops: 2,
        }
    }

    fn put_op(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }

    fn del_op(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }

    fn txn_op(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(TxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }

    fn check(success: Vec<RequestOp>) -> Result<(), ApiError> {
        txn(
            &TxnRequest {
                compare: vec![],
                success,
                failure: vec![],
            },
            &limits(),
        )
    }

    #[test]
    fn duplicate_puts_and_put_inside_delete_are_refused() {
        assert_eq!(
            check(vec![put_op("a"), put_op("a")]),
            Err(ApiError::duplicate_key())
        );
        assert_eq!(
            check(vec![put_op("b"), del_op("a", "c")]),
            Err(ApiError::duplicate_key())
        );
        assert_eq!(check(vec![put_op("a"), del_op("b", "c")]), Ok(()));
    }

    #[test]
    fn nested_branches_may_write_the_same_key_but_not_the_outer_one() {
        assert_eq!(
            check(vec![txn_op(vec![put_op("a")], vec![put_op("a")])]),
            Ok(())
        );
        assert_eq!(
            check(vec![put_op("a"), txn_op(vec![put_op("a")], vec![])]),
            Err(ApiError::duplicate_key())
        );
    }

    #[test]
    fn too_many_ops_and_empty_keys() {
        assert_eq!(
            check(vec![put_op("a"), put_op("b"), put_op("c")]),
            Err(ApiError::too_many_ops())
        );
        assert_eq!(check(vec![put_op("")]), Err(ApiError::empty_key()));
    }

    #[test]
    fn put_flags() {
        let p = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(put(&p), Err(ApiError::value_provided()));
    }
}
