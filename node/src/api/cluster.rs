//! etcd's Cluster service: MemberList, MemberAdd, MemberRemove, MemberPromote.
//!
//! Raft membership says who the members are and where their peer ports are; the
//! names and client URLs each member published through the log complete the
//! picture, as in etcd (a member added but not yet started has neither).

use std::sync::Arc;

use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::errors::ApiError;
use crate::node::Forwarded;
use crate::node::Node;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::*;
use crate::raft::member_id_for;
use crate::raft::valid_peer_url;
use crate::raft::NodeId;

pub struct ClusterService {
    pub node: Arc<Node>,
}

/// The members as etcd reports them, voters and learners, ordered by id.
pub fn member_list(node: &Node) -> Vec<Member> {
    let metrics = node.raft_metrics();
    let membership = metrics.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, m)| {
            let attrs = node.member_attributes(*id).unwrap_or_default();
            Member {
                id: *id,
                name: attrs.name,
                peer_ur_ls: vec![m.peer_url.clone()],
                client_ur_ls: attrs.client_urls,
                is_learner: !voters.contains(id),
            }
        })
        .collect()
}

impl ClusterService {
    fn list_response_header(&self) -> Option<ResponseHeader> {
        Some(self.node.header(self.node.mvcc().current_revision()))
    }

    /// After a change made on the leader, wait until this member's view of the
    /// membership shows it, so the member list in the response is current.
    async fn await_local_view(
        &self,
        done: impl Fn(&crate::raft::Membership) -> bool + Send + Sync,
    ) {
        let _ = self
            .node
            .raft()
            .wait(Some(crate::node::REQUEST_TIMEOUT))
            .metrics(
                |m| done(m.membership_config.membership()),
                "membership change seen locally",
            )
            .await;
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        self.node.require_root(req.metadata()).await?;
        let req = req.into_inner();
        if req.peer_ur_ls.is_empty() || !req.peer_ur_ls.iter().all(|u| valid_peer_url(u)) {
            return Err(ApiError::member_bad_urls().into());
        }
        if req.peer_ur_ls.len() > 1 {
            return Err(ApiError::new(
                tonic::Code::InvalidArgument,
                "raftkv: a member has exactly one peer URL",
            )
            .into());
        }
        let peer_url = req.peer_ur_ls[0].trim_end_matches('/').to_string();
        let id = member_id_for(&peer_url);
        self.node
            .change_membership(Forwarded::AddMember {
                id,
                peer_url: peer_url.clone(),
                learner: req.is_learner,
            })
            .await?;
        self.await_local_view(|m| m.get_node(&id).is_some()).await;
        Ok(Response::new(MemberAddResponse {
            header: self.list_response_header(),
            member: Some(Member {
                id,
                name: String::new(),
                peer_ur_ls: vec![peer_url],
                client_ur_ls: vec![],
                is_learner: req.is_learner,
            }),
            members: member_list(&self.node),
        }))
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.node.require_root(req.metadata()).await?;
        let id = req.into_inner().id;
        self.node
            .change_membership(Forwarded::RemoveMember { id })
            .await?;
        // A removed member never receives the configuration that leaves it out,
        // so when it answers for its own removal its view stays as it was.
        if id != self.node.id() {
            self.await_local_view(|m| m.get_node(&id).is_none()).await;
        }
        let mut members = member_list(&self.node);
        members.retain(|m| m.id != id);
        Ok(Response::new(MemberRemoveResponse {
            header: self.list_response_header(),
            members,
        }))
    }

    async fn member_update(
        &self,
        _req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(Status::unimplemented(
            "raftkv: MemberUpdate (changing a member's peer URL) is not implemented; remove and re-add the member",
        ))
    }

    async fn member_list(
        &self,
        req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if req.into_inner().linearizable {
            self.node.read_barrier().await?;
        }
        Ok(Response::new(MemberListResponse {
            header: self.list_response_header(),
            members: member_list(&self.node),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.node.require_root(req.metadata()).await?;
        let id = req.into_inner().id;
        self.node
            .change_membership(Forwarded::PromoteMember { id })
            .await?;
        self.await_local_view(|m| m.voter_ids().any(|v| v == id))
            .await;
        Ok(Response::new(MemberPromoteResponse {
            header: self.list_response_header(),
            members: member_list(&self.node),
        }))
    }
}
