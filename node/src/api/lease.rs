//! etcd's Lease service: Grant, Revoke, KeepAlive, TimeToLive, Leases.
//!
//! Grant and revoke are replicated commands; keep-alive and remaining TTL are
//! answered by the leader, which alone keeps lease deadlines (`crate::lease`).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use futures::StreamExt;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use crate::auth::{Caller, Need};
use crate::errors::ApiError;
use crate::node::ForwardReply;
use crate::node::Forwarded;
use crate::node::Node;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::*;
use crate::proto::raftkvpb::command::Op;
use crate::proto::raftkvpb::command_result::Result as Applied;
use crate::raft::Command;
use crate::store::lease::MAX_LEASE_TTL;

pub struct LeaseService {
    pub node: Arc<Node>,
    /// The shortest TTL granted, in seconds (etcd: 1.5 election timeouts).
    pub min_ttl: i64,
}

/// Revoking deletes the lease's keys: the caller must be allowed to.
fn may_revoke(node: &Node, caller: &Caller, id: i64) -> Result<(), ApiError> {
    for key in node.lease_keys(id)? {
        caller.require(&key, &[], Need::Write)?;
    }
    Ok(())
}

/// The leader's view of a lease: (remaining, granted) TTL, or None.
async fn leader_view(node: &Node, req: Forwarded) -> Result<Option<(i64, i64)>, ApiError> {
    match node.on_leader(req).await? {
        ForwardReply::Lease(view) => Ok(view),
        _ => Err(ApiError::internal("unexpected reply to a lease request")),
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        self.node.caller(req.metadata()).await?;
        self.node.check_quota().await?;
        let mut req = req.into_inner();
        if req.ttl > MAX_LEASE_TTL {
            return Err(Status::out_of_range("etcdserver: too large lease TTL"));
        }
        if req.id < 0 {
            return Err(Status::invalid_argument("raftkv: lease ids are positive"));
        }
        req.ttl = req.ttl.max(self.min_ttl);
        if req.id == 0 {
            // Chosen here, before proposing, so every member grants the same id.
            req.id = (rand::random::<u64>() >> 1).max(1) as i64;
        }
        let cmd = Command::new(Op::LeaseGrant(req));
        let Applied::LeaseGrant(mut resp) = self.node.propose(cmd).await? else {
            return Err(ApiError::internal("unexpected result of a lease grant").into());
        };
        self.node.complete_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let (md, _, req) = req.into_parts();
        let caller = self.node.caller(&md).await?;
        let id = req.id;
        may_revoke(&self.node, &caller, id)?;
        let applied = self
            .node
            .propose_as(caller, &md, Op::LeaseRevoke(req), |caller, _| {
                may_revoke(&self.node, caller, id)
            })
            .await?;
        let Applied::LeaseRevoke(mut resp) = applied else {
            return Err(ApiError::internal("unexpected result of a lease revoke").into());
        };
        self.node.complete_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    type LeaseKeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.node.caller(req.metadata()).await?;
        let node = self.node.clone();
        let replies = req.into_inner().then(move |item| {
            let node = node.clone();
            async move {
                let id = item?.id;
                // etcd answers TTL 0 for a lease that does not exist (any more).
                let view = leader_view(&node, Forwarded::LeaseKeepAlive { id }).await?;
                Ok(LeaseKeepAliveResponse {
                    header: Some(node.header(node.mvcc().current_revision())),
                    id,
                    ttl: view.map_or(0, |(ttl, _)| ttl),
                })
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = req.into_inner();
        let view = leader_view(&self.node, Forwarded::LeaseTimeToLive { id: req.id }).await?;
        let header = Some(self.node.header(self.node.mvcc().current_revision()));
        let Some((remaining, granted)) = view else {
            // etcd: an unknown lease has TTL -1 (not an error).
            return Ok(Response::new(LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: vec![],
            }));
        };
        let keys = if req.keys {
            self.node.read_barrier().await?;
            self.node.lease_keys(req.id)?
        } else {
            Vec::new()
        };
        Ok(Response::new(LeaseTimeToLiveResponse {
            header,
            id: req.id,
            ttl: remaining,
            granted_ttl: granted,
            keys,
        }))
    }

    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.node.read_barrier().await?;
        let leases = self
            .node
            .lease_ids()?
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.node.header(self.node.mvcc().current_revision())),
            leases,
        }))
    }
}
