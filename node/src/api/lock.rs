//! etcd's Lock service (v3lock): a distributed mutex on a lease.
//!
//! `Lock(name, lease)` queues `<name>/<lease hex>` and returns it once it is
//! the oldest key under `<name>/`; `Unlock(key)` deletes it. A lock holder that
//! dies releases the lock when its lease expires. See `key_queue`.

use std::sync::Arc;

use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::key_queue;
use crate::auth::Need;
use crate::node::Node;
use crate::proto::etcdserverpb::DeleteRangeRequest;
use crate::proto::raftkvpb::command::Op;
use crate::proto::v3lockpb::lock_server::Lock;
use crate::proto::v3lockpb::*;

pub struct LockService {
    pub node: Arc<Node>,
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, req: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let (prefix, key, allowed) = key_queue::contender(
            &self.node,
            req.metadata(),
            &req.get_ref().name,
            req.get_ref().lease,
            "lock",
        )
        .await?;
        let req = req.into_inner();
        let mine = key_queue::enqueue(&self.node, &allowed, &key, b"", req.lease).await?;
        key_queue::wait_for_turn(&self.node, &prefix, &key, mine.create_revision).await?;
        Ok(Response::new(LockResponse {
            header: Some(self.node.header(self.node.mvcc().current_revision())),
            key,
        }))
    }

    async fn unlock(
        &self,
        req: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let allowed = key_queue::authorize(
            &self.node,
            req.metadata(),
            &req.get_ref().key,
            &[],
            Need::Write,
        )
        .await?;
        let unlock = Op::DeleteRange(DeleteRangeRequest {
            key: req.into_inner().key,
            ..Default::default()
        });
        key_queue::propose(&self.node, &allowed, unlock).await?;
        Ok(Response::new(UnlockResponse {
            header: Some(self.node.header(self.node.mvcc().current_revision())),
        }))
    }
}
