//! One walk over a `TxnRequest` and every txn nested in it, for the checks
//! that look at each part in turn (validation, permissions, "is it read-only",
//! "does it put"): each is a fold over [`walk`] instead of its own recursion.
//!
//! The order is the request's own, depth first: a txn, then its success and
//! failure ops, a nested txn where it stands among them. So a check that stops
//! at the first problem reports the same one a recursive check would.

use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::{RequestOp, TxnRequest};
use std::iter::Chain;
use std::slice::Iter;

/// A part of a txn request.
#[derive(Debug, Clone, Copy)]
pub enum TxnPart<'a> {
    /// The request itself or a nested txn (its compares and op counts).
    Txn(&'a TxnRequest),
    /// An op that is not a txn: a range, put or delete, or an empty op.
    Op(&'a RequestOp),
}

/// Every part of `root`: `root` first, then its ops in order.
pub fn walk(root: &TxnRequest) -> TxnWalk<'_> {
    TxnWalk {
        next_txn: Some(root),
        open: Vec::new(),
    }
}

/// Every op of `root` that is not a txn, at any depth.
pub fn leaf_ops(root: &TxnRequest) -> impl Iterator<Item = &RequestOp> {
    walk(root).filter_map(|part| match part {
        TxnPart::Op(op) => Some(op),
        TxnPart::Txn(_) => None,
    })
}

/// The iterator of [`walk`].
pub struct TxnWalk<'a> {
    /// A txn to yield before going into its ops.
    next_txn: Option<&'a TxnRequest>,
    /// The ops still to visit of each txn we are inside, innermost last.
    open: Vec<Chain<Iter<'a, RequestOp>, Iter<'a, RequestOp>>>,
}

impl<'a> Iterator for TxnWalk<'a> {
    type Item = TxnPart<'a>;

    fn next(&mut self) -> Option<TxnPart<'a>> {
        if let Some(txn) = self.next_txn.take() {
            self.open.push(txn.success.iter().chain(&txn.failure));
            return Some(TxnPart::Txn(txn));
        }
        loop {
            let ops = self.open.last_mut()?;
            match ops.next() {
                None => {
                    self.open.pop();
                }
                Some(RequestOp {
                    request: Some(Request::RequestTxn(inner)),
                }) => {
                    self.open.push(inner.success.iter().chain(&inner.failure));
                    return Some(TxnPart::Txn(inner));
                }
                Some(op) => return Some(TxnPart::Op(op)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{PutRequest, RangeRequest};

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }

    fn get(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            success,
            failure,
            ..Default::default()
        }
    }

    fn label(part: TxnPart<'_>) -> String {
        match part {
            TxnPart::Txn(t) => format!("txn{}", t.success.len() + t.failure.len()),
            TxnPart::Op(RequestOp {
                request: Some(Request::RequestPut(p)),
            }) => format!("put {}", String::from_utf8_lossy(&p.key)),
            TxnPart::Op(RequestOp {
                request: Some(Request::RequestRange(r)),
            }) => format!("get {}", String::from_utf8_lossy(&r.key)),
            TxnPart::Op(_) => "other".to_string(),
        }
    }

    #[test]
    fn walks_in_request_order_depth_first() {
        let inner = txn(vec![put("b")], vec![get("c"), put("d")]);
        let nested = RequestOp {
            request: Some(Request::RequestTxn(inner)),
        };
        let root = txn(vec![put("a"), nested, get("e")], vec![put("f")]);
        let parts: Vec<String> = walk(&root).map(label).collect();
        assert_eq!(
            parts,
            ["txn4", "put a", "txn3", "put b", "get c", "put d", "get e", "put f"]
        );
        assert_eq!(leaf_ops(&root).count(), 6);
    }

    #[test]
    fn an_empty_txn_is_one_part() {
        let parts: Vec<String> = walk(&TxnRequest::default()).map(label).collect();
        assert_eq!(parts, ["txn0"]);
    }
}
