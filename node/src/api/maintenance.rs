//! etcd's Maintenance service.
//!
//! Status, Alarm, Hash, HashKV, Defragment, Snapshot and MoveLeader are
//! served; Downgrade answers `Unimplemented`.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use openraft::ServerState;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::node::Node;
use crate::node::ETCD_API_VERSION;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::*;

pub struct MaintenanceService {
    pub node: Arc<Node>,
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("raftkv: Maintenance.{what} is not implemented yet"))
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        use crate::proto::etcdserverpb::alarm_request::AlarmAction;
        let caller = self.node.caller(req.metadata()).await?;
        let req = req.into_inner();
        let matches = |a: &AlarmMember| {
            (req.member_id == 0 || a.member_id == req.member_id)
                && (req.alarm == AlarmType::None as i32 || a.alarm == req.alarm)
        };
        let before: Vec<AlarmMember> = self.node.alarms()?.into_iter().filter(matches).collect();
        if AlarmAction::try_from(req.action) == Ok(AlarmAction::Get) {
            return Ok(Response::new(AlarmResponse {
                header: Some(self.node.header(self.node.mvcc().current_revision())),
                alarms: before,
            }));
        }
        caller.require_root()?;
        // etcdctl disarms with member 0 and alarm NONE: clear every match.
        let targets = if AlarmAction::try_from(req.action) == Ok(AlarmAction::Deactivate) {
            before.clone()
        } else {
            vec![AlarmMember {
                member_id: req.member_id,
                alarm: req.alarm,
            }]
        };
        for t in &targets {
            let cmd = crate::raft::Command::new(crate::proto::raftkvpb::command::Op::Alarm(
                AlarmRequest {
                    action: req.action,
                    member_id: t.member_id,
                    alarm: t.alarm,
                },
            ));
            self.node.propose(cmd).await?;
        }
        Ok(Response::new(AlarmResponse {
            header: Some(self.node.header(self.node.mvcc().current_revision())),
            alarms: targets,
        }))
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let m = self.node.raft_metrics();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        let size = self.node.disk_size() as i64;
        Ok(Response::new(StatusResponse {
            header: Some(self.node.header(self.node.mvcc().current_revision())),
            version: ETCD_API_VERSION.to_string(),
            db_size: size,
            leader: self.node.leader().map_or(0, |(l, _)| l),
            raft_index: m.last_log_index.unwrap_or(0),
            raft_term: m.current_term,
            raft_applied_index: m.last_applied.map_or(0, |l| l.index),
            errors: self
                .node
                .alarms()?
                .iter()
                .map(|a| {
                    let kind = AlarmType::try_from(a.alarm).map_or("UNKNOWN", |t| t.as_str_name());
                    format!("memberID:{} alarm:{kind} ", a.member_id)
                })
                .collect(),
            db_size_in_use: size,
            is_learner: !voters.contains(&self.node.id()),
        }))
    }

    async fn defragment(
        &self,
        req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.node.require_root(req.metadata()).await?;
        self.node.defragment().await?;
        // etcd answers Defragment and MoveLeader without a header.
        Ok(Response::new(DefragmentResponse { header: None }))
    }

    async fn hash(&self, req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.node.require_root(req.metadata()).await?;
        let value = self.node.hash_all().await?;
        Ok(Response::new(HashResponse {
            header: Some(self.node.header(self.node.mvcc().current_revision())),
            hash: value,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        self.node.require_root(req.metadata()).await?;
        let revision = req.into_inner().revision;
        let (value, compacted, upto) = self.node.hash_kv(revision).await?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.node.header(upto)),
            hash: value,
            compact_revision: compacted,
        }))
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

    /// A consistent copy of this member's state, streamed as etcd streams its
    /// database: the content padded with zeros to a multiple of 512 bytes, then
    /// the SHA-256 of everything before it (etcdctl checks both). The content
    /// is a raftkv snapshot file (see `store::snapshot`), whose records end
    /// with an end marker and checksum, so the padding is unambiguous.
    async fn snapshot(
        &self,
        req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.node.require_root(req.metadata()).await?;
        let node = self.node.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<SnapshotResponse, Status>>(4);
        let header = Some(self.node.header(self.node.mvcc().current_revision()));
        tokio::task::spawn_blocking(move || {
            let result = stream_backup(&node, header, &tx);
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(Status::internal(format!("raftkv: snapshot: {e}"))));
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.node.require_root(req.metadata()).await?;
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
        if target != self.node.id() {
            self.node
                .raft()
                .trigger()
                .transfer_leader(target)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let wait = self.node.raft().wait(Some(crate::node::REQUEST_TIMEOUT));
            wait.current_leader(target, "move leader")
                .await
                .map_err(|_| {
                    Status::unavailable(
                        "etcdserver: request timed out, leader transfer took too long",
                    )
                })?;
        }
        Ok(Response::new(MoveLeaderResponse { header: None }))
    }

    async fn downgrade(
        &self,
        _req: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(not_yet("Downgrade"))
    }
}

/// Send a backup of the member's state (see `crate::backup`) as Snapshot
/// responses.
fn stream_backup(
    node: &Node,
    header: Option<ResponseHeader>,
    tx: &tokio::sync::mpsc::Sender<Result<SnapshotResponse, Status>>,
) -> std::io::Result<()> {
    node.produce_backup(|blob, remaining_bytes| {
        let msg = SnapshotResponse {
            header,
            remaining_bytes,
            blob,
        };
        // A closed channel: the client went away.
        Ok(tx.blocking_send(Ok(msg)).is_ok())
    })
    .map(|_| ())
}
