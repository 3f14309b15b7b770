//! Txns: compares decide the branch of every level first, then the chosen
//! ops are applied at one revision; read-only txns are evaluated by the same
//! code without proposing them.

use super::Applier;
use crate::errors::ApiError;
use crate::proto::etcdserverpb::compare::CompareResult;
use crate::proto::etcdserverpb::compare::CompareTarget;
use crate::proto::etcdserverpb::compare::TargetUnion;
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::response_op::Response;
use crate::proto::etcdserverpb::*;
use crate::proto::mvccpb::KeyValue;
use crate::store::mvcc::KeyRange;
use crate::store::txn_walk::leaf_ops;

impl<'a> Applier<'a> {
    /// A txn is decided before it runs, as in etcd: every compare on the path
    /// (nested ones included) is evaluated against the state before the txn, and
    /// every op on that path is checked, so the txn either applies whole or not
    /// at all.
    pub(super) fn txn_request(&mut self, req: &TxnRequest) -> Result<TxnResponse, ApiError> {
        let mut path = Vec::new();
        self.decide(req, &mut path)?;
        self.check_ops(req, &mut path.iter().copied())?;
        let rev = self.revision + 1;
        let mut wrote = false;
        let mut resp = self.txn_at(req, rev, &mut path.into_iter(), &mut wrote)?;
        if wrote {
            self.revision = rev;
        }
        resp.header = self.header();
        Ok(resp)
    }

    /// Record, in pre-order, which branch each txn on the taken path takes.
    pub(super) fn decide(&self, req: &TxnRequest, path: &mut Vec<bool>) -> Result<(), ApiError> {
        let mut succeeded = true;
        for c in &req.compare {
            if !self.compare_holds(c)? {
                succeeded = false;
                break;
            }
        }
        path.push(succeeded);
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        for op in ops {
            if let Some(Request::RequestTxn(t)) = &op.request {
                self.decide(t, path)?;
            }
        }
        Ok(())
    }

    /// Fail now, before anything is written, if an op on the path would fail.
    pub(super) fn check_ops(
        &self,
        req: &TxnRequest,
        path: &mut impl Iterator<Item = bool>,
    ) -> Result<(), ApiError> {
        let (_, ops) = branch(req, path)?;
        for op in ops {
            match &op.request {
                Some(Request::RequestPut(p)) => {
                    let prev = self.get(&p.key)?;
                    if (p.ignore_value || p.ignore_lease) && prev.is_none() {
                        return Err(ApiError::key_not_found());
                    }
                    let lease = if p.ignore_lease {
                        prev.map_or(0, |kv| kv.lease)
                    } else {
                        p.lease
                    };
                    if lease != 0 && !self.lease_exists(lease)? {
                        return Err(ApiError::lease_not_found());
                    }
                }
                Some(Request::RequestRange(r)) => {
                    if r.revision > self.revision {
                        return Err(ApiError::future_revision());
                    }
                    if r.revision > 0 && r.revision < self.compacted {
                        return Err(ApiError::compacted());
                    }
                }
                Some(Request::RequestTxn(t)) => self.check_ops(t, path)?,
                Some(Request::RequestDeleteRange(_)) => {}
                None => {
                    return Err(ApiError::new(
                        tonic::Code::InvalidArgument,
                        "etcdserver: empty request op",
                    ))
                }
            }
        }
        Ok(())
    }

    pub(super) fn txn_at(
        &mut self,
        req: &TxnRequest,
        rev: i64,
        path: &mut impl Iterator<Item = bool>,
        wrote: &mut bool,
    ) -> Result<TxnResponse, ApiError> {
        let (succeeded, ops) = branch(req, path)?;
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => {
                    let mut out = self.range_at(r)?;
                    out.header = self.header();
                    Response::ResponseRange(out)
                }
                Some(Request::RequestPut(p)) => {
                    let mut out = self.put_at(p, rev)?;
                    *wrote = true;
                    out.header = Some(ResponseHeader {
                        revision: rev,
                        ..Default::default()
                    });
                    Response::ResponsePut(out)
                }
                Some(Request::RequestDeleteRange(d)) => {
                    let mut out = self.delete_at(d, rev)?;
                    *wrote |= out.deleted > 0;
                    out.header = Some(ResponseHeader {
                        revision: rev,
                        ..Default::default()
                    });
                    Response::ResponseDeleteRange(out)
                }
                Some(Request::RequestTxn(t)) => {
                    let mut out = self.txn_at(t, rev, path, wrote)?;
                    out.header = Some(ResponseHeader {
                        revision: rev,
                        ..Default::default()
                    });
                    Response::ResponseTxn(out)
                }
                None => {
                    return Err(ApiError::new(
                        tonic::Code::InvalidArgument,
                        "etcdserver: empty request op",
                    ))
                }
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }

    pub(super) fn compare_holds(&self, c: &Compare) -> Result<bool, ApiError> {
        let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
        let kvs = self.current(&KeyRange::new(&c.key, &c.range_end))?;
        if kvs.is_empty() {
            // A missing key compares as version/revisions/lease 0; a value compare fails.
            return Ok(
                target != CompareTarget::Value && compare_kv(c, target, &KeyValue::default())
            );
        }
        Ok(kvs.iter().all(|kv| compare_kv(c, target, kv)))
    }
}

fn compare_kv(c: &Compare, target: CompareTarget, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ord = match (&c.target_union, target) {
        (Some(TargetUnion::Value(v)), CompareTarget::Value) => {
            kv.value.as_slice().cmp(v.as_slice())
        }
        (Some(TargetUnion::Version(v)), CompareTarget::Version) => kv.version.cmp(v),
        (Some(TargetUnion::CreateRevision(v)), CompareTarget::Create) => kv.create_revision.cmp(v),
        (Some(TargetUnion::ModRevision(v)), CompareTarget::Mod) => kv.mod_revision.cmp(v),
        (Some(TargetUnion::Lease(v)), CompareTarget::Lease) => kv.lease.cmp(v),
        // A compare whose operand is missing or of another kind compares with zero.
        (_, CompareTarget::Value) => kv.value.as_slice().cmp(&[]),
        (_, CompareTarget::Version) => kv.version.cmp(&0),
        (_, CompareTarget::Create) => kv.create_revision.cmp(&0),
        (_, CompareTarget::Mod) => kv.mod_revision.cmp(&0),
        (_, CompareTarget::Lease) => kv.lease.cmp(&0),
    };
    match CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
        CompareResult::NotEqual => ord != Ordering::Equal,
    }
}

/// Read-only txns are evaluated here, by the same code that applies them,
/// so a read inside a txn answers exactly as it would in a replicated one.
impl crate::store::Mvcc {
    /// Evaluate a txn that only reads, without proposing it.
    pub fn read_only_txn(
        &self,
        req: &crate::proto::etcdserverpb::TxnRequest,
    ) -> Result<crate::proto::etcdserverpb::TxnResponse, ApiError> {
        use crate::proto::raftkvpb;
        use raftkvpb::command_result::Result as Applied;
        let mut applier = Applier::new(self.db());
        let cmd = raftkvpb::Command {
            op: Some(raftkvpb::command::Op::Txn(req.clone())),
            stamp: None,
        };
        match applier.apply(&cmd).result {
            Some(Applied::Txn(resp)) => Ok(resp),
            Some(Applied::Error(e)) => Err(e.into()),
            _ => Err(ApiError::internal("unexpected result of a read-only txn")),
        }
    }
}

/// The branch the decided `path` takes at this txn: (succeeded, its ops).
fn branch<'t>(
    req: &'t TxnRequest,
    path: &mut impl Iterator<Item = bool>,
) -> Result<(bool, &'t [RequestOp]), ApiError> {
    let succeeded = path
        .next()
        .ok_or_else(|| ApiError::internal("txn path too short"))?;
    Ok((
        succeeded,
        if succeeded {
            &req.success
        } else {
            &req.failure
        },
    ))
}

pub(crate) fn txn_puts(t: &TxnRequest) -> bool {
    leaf_ops(t).any(|op| matches!(op.request, Some(Request::RequestPut(_))))
}

pub(super) fn txn_reads_history(t: &TxnRequest) -> bool {
    leaf_ops(t).any(|op| matches!(&op.request, Some(Request::RequestRange(r)) if r.revision != 0))
}
