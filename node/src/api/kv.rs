//! etcd's KV service: Range, Put, DeleteRange, Txn, Compact.
//!
//! Writes are checked and validated, then replicated as a command stamped with
//! the auth state they were checked against (`Node::propose_as`); reads are
//! served from the local MVCC store after a read barrier unless the client
//! asked for a serializable read, and their permissions are checked after the
//! barrier, so a revoke acknowledged before the read began is seen.

use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::auth::Caller;
use crate::auth::Need;
use crate::errors::ApiError;
use crate::node::validate;
use crate::node::Node;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::*;
use crate::proto::raftkvpb::command::Op;
use crate::proto::raftkvpb::command_result::Result as Applied;
use crate::store::txn_walk::{leaf_ops, walk, TxnPart};

pub struct KvService {
    pub node: Arc<Node>,
}

fn unexpected(what: &str) -> Status {
    ApiError::internal(format!("unexpected result type for {what}")).into()
}

impl KvService {
    /// Replicate a write `caller` was allowed (see `Node::propose_as`).
    async fn propose(&self, caller: Caller, md: &MetadataMap, op: Op) -> Result<Applied, Status> {
        Ok(self.node.propose_as(caller, md, op, check_write).await?)
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let caller = self.node.caller(req.metadata()).await?;
        let req = req.into_inner();
        validate::size(&req, self.node.limits())?;
        validate::range(&req)?;
        if !req.serializable {
            self.node.read_barrier().await?;
        }
        caller.require(&req.key, &req.range_end, Need::Read)?;
        let mut resp = self.node.mvcc().range(&req)?;
        self.node.complete_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let (md, _, req) = req.into_parts();
        let caller = self.node.caller(&md).await?;
        check_put(&caller, &req)?;
        self.node.check_quota().await?;
        validate::size(&req, self.node.limits())?;
        validate::put(&req)?;
        let Applied::Put(mut resp) = self.propose(caller, &md, Op::Put(req)).await? else {
            return Err(unexpected("put"));
        };
        self.node.complete_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let (md, _, req) = req.into_parts();
        let caller = self.node.caller(&md).await?;
        check_delete(&caller, &req)?;
        validate::size(&req, self.node.limits())?;
        validate::delete(&req)?;
        let Applied::DeleteRange(mut resp) =
            self.propose(caller, &md, Op::DeleteRange(req)).await?
        else {
            return Err(unexpected("delete_range"));
        };
        self.node.complete_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let (md, _, req) = req.into_parts();
        let caller = self.node.caller(&md).await?;
        let read_only = is_read_only(&req);
        if !read_only {
            check_txn(&caller, &req)?;
        }
        if crate::store::txn_puts(&req) {
            self.node.check_quota().await?;
        }
        validate::size(&req, self.node.limits())?;
        validate::txn(&req, self.node.limits())?;
        let mut resp = if read_only {
            // A read-only txn is evaluated locally (after a read barrier unless
            // every range in it is serializable), as etcd does: no log entry.
            if !all_serializable(&req) {
                self.node.read_barrier().await?;
            }
            check_txn(&caller, &req)?;
            self.node.mvcc().read_only_txn(&req)?
        } else {
            let Applied::Txn(resp) = self.propose(caller, &md, Op::Txn(req)).await? else {
                return Err(unexpected("txn"));
            };
            resp
        };
        complete_txn_headers(&self.node, &mut resp);
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let (md, _, req) = req.into_parts();
        let caller = self.node.caller(&md).await?;
        caller.require_root()?;
        let Applied::Compact(mut resp) = self.propose(caller, &md, Op::Compact(req)).await? else {
            return Err(unexpected("compact"));
        };
        self.node.complete_header(&mut resp.header);
        Ok(Response::new(resp))
    }
}

fn is_read_only(req: &TxnRequest) -> bool {
    leaf_ops(req).all(|op| matches!(op.request, Some(request_op::Request::RequestRange(_))))
}

fn all_serializable(req: &TxnRequest) -> bool {
    leaf_ops(req).all(|op| match &op.request {
        Some(request_op::Request::RequestRange(r)) => r.serializable,
        _ => true,
    })
}

/// Give the txn response and every nested response a complete header.
fn complete_txn_headers(node: &Node, resp: &mut TxnResponse) {
    use response_op::Response as R;
    node.complete_header(&mut resp.header);
    for op in &mut resp.responses {
        match &mut op.response {
            Some(R::ResponseRange(r)) => node.complete_header(&mut r.header),
            Some(R::ResponsePut(r)) => node.complete_header(&mut r.header),
            Some(R::ResponseDeleteRange(r)) => node.complete_header(&mut r.header),
            Some(R::ResponseTxn(t)) => complete_txn_headers(node, t),
            None => {}
        }
    }
}

/// A write's permission checks, run again when the auth state moved on
/// before it applied.
fn check_write(caller: &Caller, op: &Op) -> Result<(), ApiError> {
    match op {
        Op::Put(req) => check_put(caller, req),
        Op::DeleteRange(req) => check_delete(caller, req),
        Op::Txn(req) => check_txn(caller, req),
        Op::Compact(_) => caller.require_root(),
        _ => Err(ApiError::internal("not a KV write")),
    }
}

fn check_put(caller: &Caller, req: &PutRequest) -> Result<(), ApiError> {
    caller.require(&req.key, &[], Need::Write)?;
    if req.prev_kv {
        caller.require(&req.key, &[], Need::Read)?;
    }
    Ok(())
}

fn check_delete(caller: &Caller, req: &DeleteRangeRequest) -> Result<(), ApiError> {
    caller.require(&req.key, &req.range_end, Need::Write)?;
    if req.prev_kv {
        caller.require(&req.key, &req.range_end, Need::Read)?;
    }
    Ok(())
}

/// Every compare and every op of both branches, as etcd checks a txn.
fn check_txn(caller: &Caller, req: &TxnRequest) -> Result<(), ApiError> {
    use request_op::Request as R;
    for part in walk(req) {
        match part {
            TxnPart::Txn(t) => {
                for c in &t.compare {
                    caller.require(&c.key, &c.range_end, Need::Read)?;
                }
            }
            TxnPart::Op(op) => match &op.request {
                Some(R::RequestRange(r)) => caller.require(&r.key, &r.range_end, Need::Read)?,
                Some(R::RequestPut(p)) => check_put(caller, p)?,
                Some(R::RequestDeleteRange(d)) => check_delete(caller, d)?,
                Some(R::RequestTxn(_)) | None => {}
            },
        }
    }
    Ok(())
}
