//! Peer transport, server side: Raft RPCs from other members, and the requests
//! followers forward to the leader.
//!
//! Every call is checked first: it must carry this member's cluster id. A member
//! started with `--join` has none yet and adopts (and persists) the id of the
//! first leader that replicates to it; from then on any other id is refused with
//! `PermissionDenied` and logged, so two clusters can never mix their logs.
//! The same goes for the cluster epoch (see `crate::epoch`): a peer from an
//! older epoch is refused with `PermissionDenied` (its epoch in the
//! `raftkv-epoch` metadata); a newer one is checked with the member it names
//! (`Node::weigh_epoch_claim`) and fences this member only if that member
//! confirms it; a fenced member refuses everything.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use futures::StreamExt;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use crate::epoch::Verdict;
use crate::incarnation::Judgement;
use crate::node::Forwarded;
use crate::node::Node;
use crate::proto::raftkvpb::peer::raft_peer_server::RaftPeer;
use crate::proto::raftkvpb::peer::PeerHeader;
use crate::proto::raftkvpb::peer::RaftPayload;
use crate::proto::raftkvpb::peer::SnapshotChunk;
use crate::raft::codec;
use crate::raft::Snapshot;
use crate::raft::SnapshotMeta;
use crate::raft::Vote;

pub struct PeerService {
    pub node: Arc<Node>,
}

/// Whether a call may introduce this member to its cluster.
#[derive(Clone, Copy, PartialEq)]
enum Adopt {
    /// Replication from a leader: a joining member learns its cluster id from it.
    FromLeader,
    /// Anything else needs an already known cluster id.
    Never,
}

fn bad_data(e: std::io::Error) -> Status {
    Status::invalid_argument(e.to_string())
}

fn reply<T: serde::Serialize>(msg: &T) -> Result<Response<RaftPayload>, Status> {
    Ok(Response::new(RaftPayload {
        header: None,
        data: codec::encode(msg).map_err(|e| Status::internal(e.to_string()))?,
    }))
}

impl PeerService {
    fn check(&self, header: Option<&PeerHeader>, adopt: Adopt) -> Result<(), Status> {
        let h = header.ok_or_else(|| Status::invalid_argument("peer request without a header"))?;
        if h.to_id != 0 && h.to_id != self.node.id() {
            return Err(Status::failed_precondition(format!(
                "request for member {:x} reached member {:x}: check the peer URLs",
                h.to_id,
                self.node.id()
            )));
        }
        if let Some(why) = self.node.epoch().fenced() {
            return Err(Status::failed_precondition(format!(
                "member {:x} is fenced: {why}",
                self.node.id()
            )));
        }
        let mine = self.node.cluster_id();
        if mine == h.cluster_id && mine != 0 {
            self.check_epoch(h)?;
            return self.check_incarnation(h, Adopt::Never);
        }
        if mine == 0 && h.cluster_id != 0 && adopt == Adopt::FromLeader {
            self.check_incarnation(h, adopt)?;
            self.node
                .adopt_epoch(h.epoch)
                .map_err(|e| Status::internal(format!("cannot persist the epoch: {e:#}")))?;
            self.node
                .adopt_cluster_id(h.cluster_id)
                .map_err(|e| Status::internal(format!("cannot persist the cluster id: {e:#}")))?;
            tracing::info!(cluster_id = %format!("{:x}", h.cluster_id), epoch = h.epoch, leader = %format!("{:x}", h.from_id), "joined cluster");
            return Ok(());
        }
        if mine == 0 {
            return Err(Status::failed_precondition(format!(
                "member {:x} has not joined a cluster yet",
                self.node.id()
            )));
        }
        tracing::error!(
            ours = %format!("{mine:x}"),
            theirs = %format!("{:x}", h.cluster_id),
            from = %format!("{:x}", h.from_id),
            "refused a peer request from another cluster"
        );
        Err(Status::permission_denied(format!(
            "cluster id mismatch: member {:x} belongs to cluster {mine:x}, the request from member {:x} is for cluster {:x}",
            self.node.id(), h.from_id, h.cluster_id
        )))
    }

    /// Same cluster: the epochs must match too (see `crate::epoch`).
    fn check_epoch(&self, h: &PeerHeader) -> Result<(), Status> {
        let epoch = &self.node.epoch();
        match crate::epoch::judge(epoch.get(), h.epoch) {
            Verdict::Same => Ok(()),
            Verdict::PeerOlder => {
                let msg = crate::epoch::refusal(self.node.id(), epoch.get(), h.from_id, h.epoch);
                tracing::warn!("refused a peer request: {msg}");
                let mut status = Status::permission_denied(msg);
                if let Ok(v) = epoch.get().to_string().parse() {
                    status
                        .metadata_mut()
                        .insert(crate::epoch::EPOCH_METADATA, v);
                }
                Err(status)
            }
            Verdict::PeerNewer => {
                // Anyone can write a header: ask the member it names.
                self.node.weigh_epoch_claim(h.from_id, h.epoch);
                Err(Status::failed_precondition(format!(
                    "member {:x} is at epoch {}, not {} as member {:x} claims: \
                     it is asking member {:x} before it fences itself",
                    self.node.id(),
                    epoch.get(),
                    h.epoch,
                    h.from_id,
                    h.from_id
                )))
            }
        }
    }

    /// The sender must be the data dir recorded for it, and this member the
    /// one the sender recorded (see `crate::incarnation`). A refused sender
    /// is told the record, from which it can tell it was replaced. This
    /// member, refused by its sender's record, only refuses (anyone can write
    /// a header; its own requests will be refused if it was replaced); an
    /// empty `--join` member also says why it waits, in its readiness.
    fn check_incarnation(&self, h: &PeerHeader, adopt: Adopt) -> Result<(), Status> {
        let node = &self.node;
        match node.judge_incarnation(h.from_id, h.from_incarnation, h.to_incarnation) {
            Judgement::Accept => Ok(()),
            Judgement::SenderReplaced { recorded } => {
                let mut status = Status::failed_precondition(format!(
                    "member {:x}'s data dir (incarnation {:x}) is not the one recorded for it \
                     ({recorded:x}): it was wiped or replaced; remove the member and add it again",
                    h.from_id, h.from_incarnation
                ));
                if let Ok(v) = recorded.to_string().parse() {
                    status
                        .metadata_mut()
                        .insert(crate::incarnation::RECORDED_METADATA, v);
                }
                Err(status)
            }
            Judgement::ReceiverReplaced { named } => {
                if adopt == Adopt::FromLeader {
                    node.incarnation().leader_named(h.from_id, named);
                }
                tracing::error!(
                    from = %format!("{:x}", h.from_id),
                    "refused a peer request: it is for data dir incarnation {named:x} of this \
                     member, this one is {:x}",
                    node.incarnation().own()
                );
                Err(Status::failed_precondition(format!(
                    "member {:x}'s data dir (incarnation {:x}) is not the one member {:x} \
                     recorded ({named:x})",
                    node.id(),
                    node.incarnation().own(),
                    h.from_id
                )))
            }
        }
    }

    /// A candidate, or a member asking whether it still is one, must be in
    /// this member's membership. One that is not is refused with the
    /// membership's log index, from which it can tell whether it was removed
    /// (see `crate::removal`). Appends are not judged: a member that has not
    /// caught up with a leader's addition must still take them to learn of
    /// it. A member that holds no membership yet judges no one.
    fn check_member(&self, header: Option<&PeerHeader>) -> Result<(), Status> {
        let Some(h) = header else { return Ok(()) };
        let Some(index) = self.node.membership_without(h.from_id) else {
            return Ok(());
        };
        let mut status = Status::failed_precondition(format!(
            "member {:x} is not in member {:x}'s membership (log index {index}):              it was removed, or this member has not caught up with its addition yet",
            h.from_id,
            self.node.id()
        ));
        if let Ok(v) = index.to_string().parse() {
            status
                .metadata_mut()
                .insert(crate::removal::REMOVED_METADATA, v);
        }
        Err(status)
    }

    fn open<T: serde::de::DeserializeOwned>(
        &self,
        p: &RaftPayload,
        adopt: Adopt,
    ) -> Result<T, Status> {
        self.check(p.header.as_ref(), adopt)?;
        codec::decode(&p.data).map_err(bad_data)
    }
}

type PayloadStream = Pin<Box<dyn Stream<Item = Result<RaftPayload, Status>> + Send>>;

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = self.open(req.get_ref(), Adopt::Never)?;
        self.check_member(req.get_ref().header.as_ref())?;
        let resp = self
            .node
            .raft()
            .vote(rpc)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        reply(&resp)
    }

    async fn pre_vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = self.open(req.get_ref(), Adopt::Never)?;
        self.check_member(req.get_ref().header.as_ref())?;
        let resp = self
            .node
            .raft()
            .pre_vote(rpc)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        reply(&resp)
    }

    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = self.open(req.get_ref(), Adopt::FromLeader)?;
        self.node.leader_contact().touch();
        let resp = self
            .node
            .raft()
            .append_entries(rpc)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        reply(&resp)
    }

    type StreamAppendStream = PayloadStream;

    async fn stream_append(
        &self,
        req: Request<Streaming<RaftPayload>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let mut incoming = req.into_inner();
        // Check the first message before handing the stream to Raft.
        let Some(first) = incoming.next().await else {
            return Ok(Response::new(Box::pin(futures::stream::empty())));
        };
        let first = first?;
        let incarnations = first
            .header
            .as_ref()
            .map(|h| (h.from_incarnation, h.to_incarnation));
        let first = self.open(&first, Adopt::FromLeader)?;
        let cluster_id = self.node.cluster_id();
        let epoch = self.node.epoch().get();
        let contact = self.node.leader_contact().clone();
        contact.touch();
        let rest = incoming.scan((), move |_, item| {
            contact.touch();
            // The whole stream comes from one leader of one cluster, judged
            // by its first header; anything else (or a transport error) ends
            // it.
            let next = item.ok().and_then(|payload| {
                let h = payload.header.as_ref()?;
                let same = h.cluster_id == cluster_id
                    && h.epoch == epoch
                    && Some((h.from_incarnation, h.to_incarnation)) == incarnations;
                same.then_some(())?;
                codec::decode(&payload.data).ok()
            });
            futures::future::ready(next)
        });
        let requests = futures::stream::iter([first]).chain(rest);
        let replies = self.node.raft().stream_append(requests).map(|r| match r {
            Ok(result) => codec::encode(&result)
                .map(|data| RaftPayload { header: None, data })
                .map_err(|e| Status::internal(e.to_string())),
            Err(fatal) => Err(Status::internal(format!("raft stopped: {fatal}"))),
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftPayload>, Status> {
        let mut chunks = req.into_inner();
        let dir = self.node.snapshot_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Status::internal(e.to_string()))?;
        let file = IncomingFile(dir.join(format!("incoming-{}.part", rand::random::<u64>())));
        self.receive_snapshot(&mut chunks, &file.0).await
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = self.open(req.get_ref(), Adopt::Never)?;
        let resp = self
            .node
            .raft()
            .handle_transfer_leader(rpc)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        reply(&resp)
    }

    async fn forward(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let forwarded: Forwarded = self.open(req.get_ref(), Adopt::Never)?;
        reply(&self.node.run_forwarded(&forwarded).await)
    }

    async fn read_index(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let () = self.open(req.get_ref(), Adopt::Never)?;
        let result: Result<u64, (i32, String)> = self.node.read_index_local().await.map_err(|e| {
            let e = e.into_api();
            (e.code as i32, e.message)
        });
        reply(&result)
    }

    async fn cluster_info(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let () = self.open(req.get_ref(), Adopt::Never)?;
        self.check_member(req.get_ref().header.as_ref())?;
        reply(&(self.node.cluster_id(), self.node.id()))
    }
}

/// The file an incoming snapshot is written to, removed however the transfer
/// ends: installed, refused, or dropped mid-stream because the sender reset
/// the call (a leader does whenever it closes replication to this member), in
/// which case this handler is dropped at an await and no code after it runs.
struct IncomingFile(std::path::PathBuf);

impl Drop for IncomingFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl PeerService {
    async fn receive_snapshot(
        &self,
        chunks: &mut Streaming<SnapshotChunk>,
        path: &std::path::Path,
    ) -> Result<Response<RaftPayload>, Status> {
        let io = |e: std::io::Error| Status::internal(format!("receiving snapshot: {e}"));
        let first = chunks
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        self.check(first.header.as_ref(), Adopt::FromLeader)?;
        self.node.leader_contact().touch();
        let meta: SnapshotMeta = codec::decode(&first.meta).map_err(bad_data)?;
        let vote: Vote = codec::decode(&first.vote).map_err(bad_data)?;
        let mut file = std::fs::File::create(path).map_err(io)?;
        file.write_all(&first.data).map_err(io)?;
        let mut done = first.done;
        while !done {
            let chunk = chunks
                .next()
                .await
                .ok_or_else(|| Status::aborted("snapshot stream ended early"))??;
            file.write_all(&chunk.data).map_err(io)?;
            done = chunk.done;
        }
        file.sync_all().map_err(io)?;
        let file = std::fs::File::open(path).map_err(io)?;
        let resp = self
            .node
            .raft()
            .install_full_snapshot(
                vote,
                Snapshot {
                    meta,
                    snapshot: file,
                },
            )
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        reply(&resp)
    }
}
