//! raftkv's Admin service: what etcd's API cannot report about a member, the
//! operator's one-time initialization of a new cluster's first member, solo
//! recovery, on-demand snapshots and backups (the backup calls are in
//! `admin_backup`).
//!
//! With auth enabled every call but MemberStatus (read-only, like etcd's
//! Maintenance.Status) and RecoverSolo needs the root role, as etcd's
//! MemberAdd and Snapshot do.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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
            .any(|v| v == node.id());
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Candidate => "candidate",
            ServerState::Shutdown => "shutdown",
            _ if !is_voter => "learner",
            _ => "follower",
        };
        Ok(Response::new(MemberStatusResponse {
            id: node.id(),
            name: node.name().to_string(),
            role: role.into(),
            term: m.current_term,
            leader: node.leader().map_or(0, |(l, _)| l),
            committed_index: m.local_committed.map_or(0, |c| c.index),
            applied_index: m.last_applied.map_or(0, |a| a.index),
            last_log_index: m.last_log_index.unwrap_or(0),
            snapshot_index: m.snapshot.map_or(0, |s| s.index),
            purged_index: m.purged.map_or(0, |p| p.index),
            cluster_id: node.cluster_id(),
            revision: node.mvcc().current_revision(),
            not_ready_reason: crate::http::not_ready_reason(node).unwrap_or_default(),
            epoch: node.epoch().get(),
            millis_since_leader: match node.leader() {
                Some(_) => 0,
                None => node.leader_seen().since().as_millis() as u64,
            },
        }))
    }

    async fn initialize(
        &self,
        req: Request<InitializeRequest>,
    ) -> Result<Response<InitializeResponse>, Status> {
        self.node.require_root(req.metadata()).await?;
        let req = req.into_inner();
        let token = req.cluster_token;
        if token.is_empty() {
            return Err(Status::invalid_argument(
                "raftkv: cluster_token is required",
            ));
        }
        let _guard = self.init_lock.lock().await;
        let node = &self.node;
        let members = BTreeMap::from([(node.id(), node.peer_url().to_string())]);
        let wanted = crate::config::derive_cluster_id(&token, &members);
        let current = node.cluster_id();
        let initialized = node
            .raft()
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
                node.id()
            )));
        }
        if !req.restore_from_backup.is_empty() {
            return self
                .initialize_from_backup(&req.restore_from_backup, wanted, &members)
                .await;
        }
        // Not initialized yet; the id may be persisted by an earlier attempt
        // that failed before initializing, in which case this one finishes it.
        if current == 0 {
            node.adopt_cluster_id(wanted).map_err(|e| {
                Status::internal(format!("raftkv: persisting the cluster id: {e:#}"))
            })?;
        }
        let raft_members = BTreeMap::from([(
            node.id(),
            crate::raft::Member {
                peer_url: node.peer_url().to_string(),
            },
        )]);
        node.raft()
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
        self.node.require_root(req.metadata()).await?;
        let req = req.into_inner();
        if req.id == 0 {
            return Err(Status::invalid_argument(
                "raftkv: member id 0 is not allowed",
            ));
        }
        if !crate::raft::valid_peer_url(&req.peer_url) {
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
        req: Request<RecoverSoloRequest>,
    ) -> Result<Response<RecoverSoloResponse>, Status> {
        // With auth on, root, as every Admin change: a token needs the log
        // (one issued before the quorum went still works while it lives),
        // so without a quorum it is root's client certificate
        // (--client-cert-auth), which asks nothing of the other members.
        self.node.require_root(req.metadata()).await?;
        let _guard = self.init_lock.lock().await;
        let node = &self.node;
        let wanted = Duration::from_millis(req.into_inner().min_leaderless_millis);
        let floor = self.recovery_floor();
        let needed = wanted.max(floor);
        if let Some((leader, _)) = node.leader() {
            return Err(Status::failed_precondition(format!(
                "raftkv: member {leader:x} leads the cluster: solo recovery is only for a cluster that lost quorum"
            )));
        }
        let leaderless = node.leader_seen().since();
        if leaderless < needed {
            return Err(Status::failed_precondition(format!(
                "raftkv: no leader for {}ms only; solo recovery needs {}ms without one (requested {}ms, floor {}ms)",
                leaderless.as_millis(),
                needed.as_millis(),
                wanted.as_millis(),
                floor.as_millis()
            )));
        }
        if let Some(why) = node.epoch().fenced() {
            return Err(Status::failed_precondition(format!(
                "raftkv: this member is fenced ({why}): it must not be recovered"
            )));
        }
        // Checked again on the stored state; here so that a plain mistake does
        // not cost a restart.
        let is_voter = node
            .raft_metrics()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == node.id());
        if !is_voter {
            return Err(Status::failed_precondition(format!(
                "raftkv: member {:x} is not a voter (a learner, or not initialized): recover from a voter",
                node.id()
            )));
        }
        // Stop Raft, so nothing writes the log or vote under the rewrite.
        node.raft()
            .shutdown()
            .await
            .map_err(|e| Status::internal(format!("raftkv: stopping Raft: {e}")))?;
        let outcome = node.recover_solo().await?;
        // Restart either way: on success into the one-member cluster, on
        // failure (nothing was written) as it was, Raft running again.
        node.restart_after(Duration::from_millis(300));
        let report = outcome
            .map_err(|e| Status::failed_precondition(format!("raftkv: solo recovery: {e:#}")))?;
        let text = report.text();
        tracing::warn!("{text}");
        Ok(Response::new(RecoverSoloResponse {
            cluster_id: report.cluster_id,
            epoch: report.epoch,
            last_applied_index: report.last_applied_index,
            revision: report.revision,
            key_count: report.key_count,
            last_log_index: report.last_log_index,
            report: text,
        }))
    }

    async fn snapshot_now(
        &self,
        req: Request<SnapshotNowRequest>,
    ) -> Result<Response<SnapshotNowResponse>, Status> {
        self.node.require_root(req.metadata()).await?;
        let node = &self.node;
        let applied = node.raft_metrics().last_applied.map_or(0, |l| l.index);
        let fatal = |e: openraft::errors::Fatal<crate::raft::TypeConfig>| {
            Status::unavailable(format!("raftkv: Raft is not running: {e}"))
        };
        node.raft().trigger().snapshot().await.map_err(fatal)?;
        let m = node
            .raft()
            .wait(Some(Duration::from_secs(60)))
            .metrics(
                |m| m.snapshot.as_ref().is_some_and(|s| s.index >= applied),
                "snapshot now",
            )
            .await
            .map_err(|e| Status::deadline_exceeded(format!("raftkv: snapshot: {e}")))?;
        let snapshot_index = m.snapshot.map_or(0, |s| s.index);
        node.raft()
            .trigger()
            .purge_log(snapshot_index)
            .await
            .map_err(fatal)?;
        // openraft purges once no replication still reads the log; report
        // where it got to within a few seconds.
        let purged = match node
            .raft()
            .wait(Some(Duration::from_secs(5)))
            .metrics(
                |m| m.purged.as_ref().is_some_and(|p| p.index >= snapshot_index),
                "purge after snapshot",
            )
            .await
        {
            Ok(m) => m.purged,
            Err(_) => node.raft_metrics().purged,
        };
        Ok(Response::new(SnapshotNowResponse {
            snapshot_index,
            purged_index: purged.map_or(0, |p| p.index),
        }))
    }

    async fn save_backup(
        &self,
        req: Request<SaveBackupRequest>,
    ) -> Result<Response<SaveBackupResponse>, Status> {
        self.node.require_root(req.metadata()).await?;
        super::admin_backup::save(&self.node, &req.into_inner().file_name).await
    }

    async fn list_backups(
        &self,
        req: Request<ListBackupsRequest>,
    ) -> Result<Response<ListBackupsResponse>, Status> {
        self.node.require_root(req.metadata()).await?;
        super::admin_backup::list(&self.node).await
    }

    async fn delete_backup(
        &self,
        req: Request<DeleteBackupRequest>,
    ) -> Result<Response<DeleteBackupResponse>, Status> {
        self.node.require_root(req.metadata()).await?;
        super::admin_backup::delete(&self.node, &req.into_inner().file_name).await
    }
}

impl AdminService {
    /// However short a wait the caller asks for, a member must have been
    /// without a leader for this long (three election timeouts: well past any
    /// ordinary election) before it recovers alone.
    fn recovery_floor(&self) -> Duration {
        self.node.leader_timeout() * 3 / 2
    }

    /// Initialize as the first member of a new cluster holding a backup's data:
    /// check the file whole, write the restored state in place of Raft's (which
    /// is idle: this member has never been initialized), then restart.
    async fn initialize_from_backup(
        &self,
        file_name: &str,
        cluster_id: u64,
        members: &BTreeMap<u64, String>,
    ) -> Result<Response<InitializeResponse>, Status> {
        let node = &self.node;
        let path = super::admin_backup::path_of(node, file_name)?;
        if !path.exists() {
            return Err(Status::not_found(format!(
                "raftkv: no backup named {file_name:?} in {}",
                node.backup_dir().display()
            )));
        }
        let check_path = path.clone();
        tokio::task::spawn_blocking(move || crate::backup::check(&check_path, &mut |_| {}))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidData => {
                    Status::data_loss(format!("raftkv: backup {file_name}: {e}"))
                }
                _ => Status::internal(format!("raftkv: reading backup {file_name}: {e}")),
            })?;
        node.raft()
            .shutdown()
            .await
            .map_err(|e| Status::internal(format!("raftkv: stopping Raft: {e}")))?;
        let outcome = node.restore_backup(&path, members, cluster_id).await?;
        node.restart_after(Duration::from_millis(300));
        outcome.map_err(|e| Status::internal(format!("raftkv: restoring: {e:#}")))?;
        node.remember_cluster_id(cluster_id);
        tracing::info!(cluster_id = %format!("{cluster_id:x}"), backup = %file_name, "initialized a new cluster from a backup; restarting");
        Ok(Response::new(InitializeResponse {
            cluster_id,
            initialized_now: true,
        }))
    }
}
