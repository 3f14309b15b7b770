//! raftkv's Admin service: what etcd's API cannot report about a member, and
//! the operator's one-time initialization of a new cluster's first member.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use openraft::ServerState;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::node::Node;
use crate::proto::raftkvpb::admin::admin_server::Admin;
use crate::proto::raftkvpb::admin::*;

pub struct AdminService {
    node: Arc<Node>,
    /// Serializes Initialize calls, so two racing calls cannot both initialize.
    init_lock: tokio::sync::Mutex<()>,
}

impl AdminService {
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            node,
            init_lock: tokio::sync::Mutex::new(()),
        }
    }
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
            epoch: 0,
            millis_since_leader: match node.leader() {
                Some(_) => 0,
                None => node.leader_contact.since().as_millis() as u64,
            },
        }))
    }

    async fn initialize(
        &self,
        req: Request<InitializeRequest>,
    ) -> Result<Response<InitializeResponse>, Status> {
        let req = req.into_inner();
        if !req.restore_from_backup.is_empty() {
            return Err(not_yet("Initialize from a backup"));
        }
        let token = req.cluster_token;
        if token.is_empty() {
            return Err(Status::invalid_argument(
                "raftkv: cluster_token is required",
            ));
        }
        let _guard = self.init_lock.lock().await;
        let node = &self.node;
        let members = BTreeMap::from([(node.id, node.peer_url.clone())]);
        let wanted = crate::config::derive_cluster_id(&token, &members);
        let current = node.cluster_id();
        let initialized = node
            .raft
            .is_initialized()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        if initialized && current == wanted {
            return Ok(Response::new(InitializeResponse {
                cluster_id: current,
                initialized_now: false,
            }));
        }
        if initialized || (current != 0 && current != wanted) {
            return Err(Status::failed_precondition(format!(
                "raftkv: member {:x} already belongs to cluster {current:x}",
                node.id
            )));
        }
        // Not initialized yet; the id may be persisted by an earlier attempt
        // that failed before initializing, in which case this one finishes it.
        if current == 0 {
            crate::server::persist_cluster_id(&node.db, wanted).map_err(|e| {
                Status::internal(format!("raftkv: persisting the cluster id: {e:#}"))
            })?;
            node.cluster_id.store(wanted, Ordering::Release);
        }
        let raft_members = BTreeMap::from([(
            node.id,
            crate::raft::Member {
                peer_url: node.peer_url.clone(),
            },
        )]);
        node.raft
            .initialize(raft_members)
            .await
            .map_err(|e| Status::internal(format!("raftkv: initializing: {e}")))?;
        tracing::info!(cluster_id = %format!("{wanted:x}"), "initialized a new cluster on request");
        Ok(Response::new(InitializeResponse {
            cluster_id: wanted,
            initialized_now: true,
        }))
    }

    async fn add_member(
        &self,
        req: Request<AddMemberRequest>,
    ) -> Result<Response<AddMemberResponse>, Status> {
        let req = req.into_inner();
        if req.id == 0 {
            return Err(Status::invalid_argument(
                "raftkv: member id 0 is not allowed",
            ));
        }
        if !crate::api::cluster::valid_peer_url(&req.peer_url) {
            return Err(crate::errors::ApiError::member_bad_urls().into());
        }
        self.node
            .change_membership(crate::node::Forwarded::AddMember {
                id: req.id,
                peer_url: req.peer_url.trim_end_matches('/').to_string(),
                learner: req.is_learner,
            })
            .await?;
        Ok(Response::new(AddMemberResponse {}))
    }

    async fn recover_solo(
        &self,
        _req: Request<RecoverSoloRequest>,
    ) -> Result<Response<RecoverSoloResponse>, Status> {
        Err(not_yet("RecoverSolo"))
    }

    async fn snapshot_now(
        &self,
        _req: Request<SnapshotNowRequest>,
    ) -> Result<Response<SnapshotNowResponse>, Status> {
        Err(not_yet("SnapshotNow"))
    }

    async fn save_backup(
        &self,
        _req: Request<SaveBackupRequest>,
    ) -> Result<Response<SaveBackupResponse>, Status> {
        Err(not_yet("SaveBackup"))
    }

    async fn list_backups(
        &self,
        _req: Request<ListBackupsRequest>,
    ) -> Result<Response<ListBackupsResponse>, Status> {
        Err(not_yet("ListBackups"))
    }

    async fn delete_backup(
        &self,
        _req: Request<DeleteBackupRequest>,
    ) -> Result<Response<DeleteBackupResponse>, Status> {
        Err(not_yet("DeleteBackup"))
    }
}

/// The Admin calls of issue 6 exist in the protocol before they exist here;
/// until then they say so instead of pretending.
fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("raftkv: {what} is not implemented yet"))
}
