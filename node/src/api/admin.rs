//! raftkv's Admin service: what etcd's API cannot report about a member.

use std::sync::Arc;

use openraft::ServerState;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::node::Node;
use crate::proto::raftkvpb::admin::admin_server::Admin;
use crate::proto::raftkvpb::admin::*;

pub struct AdminService {
    pub node: Arc<Node>,
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn member_status(
        &self,
        _req: Request<MemberStatusRequest>,
    ) -> Result<Response<MemberStatusResponse>, Status> {
        let node = &self.node;
        let m = node.raft_metrics();
        let is_voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == node.id);
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Candidate => "candidate",
            ServerState::Shutdown => "shutdown",
            _ if !is_voter => "learner",
            _ => "follower",
        };
        Ok(Response::new(MemberStatusResponse {
            id: node.id,
            name: node.name.clone(),
            role: role.into(),
            term: m.current_term,
            leader: node.leader().map_or(0, |(l, _)| l),
            committed_index: m.local_committed.map_or(0, |c| c.index),
            applied_index: m.last_applied.map_or(0, |a| a.index),
            last_log_index: m.last_log_index.unwrap_or(0),
            snapshot_index: m.snapshot.map_or(0, |s| s.index),
            purged_index: m.purged.map_or(0, |p| p.index),
            cluster_id: node.cluster_id(),
            revision: node.mvcc.current_revision(),
            not_ready_reason: crate::http::not_ready_reason(node).unwrap_or_default(),
        }))
    }
}
