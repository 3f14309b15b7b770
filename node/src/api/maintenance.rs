//! etcd's Maintenance service.
//!
//! Status and MoveLeader are served; Alarm reports no alarms (raftkv raises none
//! yet). The rest (Defragment, Hash, HashKV, Snapshot, Downgrade) answer
//! `Unimplemented` with a message until they are built.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use openraft::ServerState;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::node::Node;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::*;

/// The etcd API level raftkv speaks; clients use it for feature detection.
pub const ETCD_API_VERSION: &str = "3.5.0";

pub struct MaintenanceService {
    pub node: Arc<Node>,
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("raftkv: Maintenance.{what} is not implemented yet"))
}

/// Bytes used by the member's database files on disk.
pub fn db_size(node: &Node) -> i64 {
    fn walk(dir: &std::path::Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    walk(&node.data_dir.join("db")) as i64
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, _req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        Ok(Response::new(AlarmResponse {
            header: Some(self.node.header(self.node.mvcc.current_revision())),
            alarms: vec![],
        }))
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let m = self.node.raft_metrics();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        let size = db_size(&self.node);
        Ok(Response::new(StatusResponse {
            header: Some(self.node.header(self.node.mvcc.current_revision())),
            version: ETCD_API_VERSION.to_string(),
            db_size: size,
            leader: self.node.leader().map_or(0, |(l, _)| l),
            raft_index: m.last_log_index.unwrap_or(0),
            raft_term: m.current_term,
            raft_applied_index: m.last_applied.map_or(0, |l| l.index),
            errors: vec![],
            db_size_in_use: size,
            is_learner: !voters.contains(&self.node.id),
        }))
    }

    async fn defragment(
        &self,
        _req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Err(not_yet("Defragment"))
    }

    async fn hash(&self, _req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(not_yet("Hash"))
    }

    async fn hash_kv(
        &self,
        _req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        Err(not_yet("HashKV"))
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

    async fn snapshot(
        &self,
        _req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(not_yet("Snapshot"))
    }

    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let target = req.into_inner().target_id;
        let m = self.node.raft_metrics();
        if m.state != ServerState::Leader {
            return Err(Status::failed_precondition("etcdserver: not leader"));
        }
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == target)
        {
            return Err(Status::not_found("etcdserver: bad leader transferee"));
        }
        if target != self.node.id {
            self.node
                .raft
                .trigger()
                .transfer_leader(target)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let wait = self.node.raft.wait(Some(crate::node::REQUEST_TIMEOUT));
            wait.current_leader(target, "move leader")
                .await
                .map_err(|_| {
                    Status::unavailable(
                        "etcdserver: request timed out, leader transfer took too long",
                    )
                })?;
        }
        Ok(Response::new(MoveLeaderResponse {
            header: Some(self.node.header(self.node.mvcc.current_revision())),
        }))
    }

    async fn downgrade(
        &self,
        _req: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(not_yet("Downgrade"))
    }
}
