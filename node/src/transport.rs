//! Peer transport, client side: how this member sends Raft RPCs to the others.
//!
//! Every request carries a [`PeerHeader`] with the cluster id, so a member of
//! another cluster (or one wiped and re-created with a new id) is refused by the
//! receiver instead of being replicated into. openraft messages travel as postcard
//! bytes inside a protobuf envelope (see `proto/raftkv/peer.proto` at the repo root).

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use futures::Stream;
use futures::StreamExt;
use openraft::base::BoxFuture;
use openraft::base::BoxStream;
use openraft::errors::NetworkError;
use openraft::errors::RPCError;
use openraft::errors::ReplicationClosed;
use openraft::errors::StreamingError;
use openraft::errors::Unreachable;
use openraft::network::v2::RaftNetworkV2;
use openraft::network::Backoff;
use openraft::network::RPCOption;
use openraft::network::RaftNetworkFactory;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::StreamAppendResult;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::OptionalSend;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

use crate::epoch::EpochState;
use crate::incarnation::Incarnation;
use crate::proto::raftkvpb::peer::raft_peer_client::RaftPeerClient;
use crate::proto::raftkvpb::peer::PeerHeader;
use crate::proto::raftkvpb::peer::RaftPayload;
use crate::proto::raftkvpb::peer::SnapshotChunk;
use crate::raft::codec;
use crate::raft::Member;
use crate::raft::NodeId;
use crate::raft::Snapshot;
use crate::raft::TypeConfig;
use crate::raft::Vote;
use crate::removal::Removal;
use crate::tls::PeerClientTls;

type RpcError = RPCError<TypeConfig>;

const SNAPSHOT_CHUNK: usize = 1 << 20;

/// What every outgoing peer call needs: who we are, which cluster, and a pool
/// of HTTP/2 channels (one per peer URL, reused by all RPCs to that peer).
/// How long an unreachable peer waits before the next attempt: fast enough to
/// notice a restarted member within an election timeout, slow enough not to spin.
const UNREACHABLE_RETRY: Duration = Duration::from_millis(200);

pub struct PeerClients {
    pub id: NodeId,
    /// 0 until known (a member started with `--join` learns it from the leader).
    pub cluster_id: Arc<AtomicU64>,
    pub epoch: Arc<EpochState>,
    /// To persist a fence (see `crate::epoch`) or a removal.
    pub db: Arc<rocksdb::DB>,
    /// Whether this member was removed (see `crate::removal`).
    pub removal: Arc<Removal>,
    /// This data dir's incarnation (see `crate::incarnation`).
    pub incarnation: Arc<Incarnation>,
    /// With `--peer-cert-file`: the certificate this member presents and the
    /// CA it trusts when it dials another member.
    tls: Option<PeerClientTls>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl PeerClients {
    pub fn new(
        id: NodeId,
        cluster_id: Arc<AtomicU64>,
        epoch: Arc<EpochState>,
        db: Arc<rocksdb::DB>,
        removal: Arc<Removal>,
        incarnation: Arc<Incarnation>,
        tls: Option<PeerClientTls>,
    ) -> Self {
        Self {
            id,
            cluster_id,
            epoch,
            db,
            removal,
            incarnation,
            tls,
            channels: Mutex::new(HashMap::new()),
        }
    }

    pub fn header(&self, to: NodeId) -> Option<PeerHeader> {
        Some(PeerHeader {
            cluster_id: self.cluster_id.load(Ordering::Acquire),
            from_id: self.id,
            to_id: to,
            epoch: self.epoch.get(),
            from_incarnation: self.incarnation.own(),
            to_incarnation: crate::store::members::recorded_incarnation(&self.db, to),
        })
    }

    /// Look at a peer's refusal: one naming a newer epoch of our cluster means
    /// this member was left behind by a solo recovery, and fences it; one
    /// naming a later membership without this member means it was removed;
    /// one naming another incarnation for it, that its data dir was replaced.
    pub fn note_refusal(&self, to: NodeId, status: &tonic::Status) {
        if let Some(index) = metadata_u64(status, crate::removal::REMOVED_METADATA) {
            self.removal.peer_refused(&self.db, to, index);
        }
        if let Some(named) = metadata_u64(status, crate::incarnation::RECORDED_METADATA) {
            self.incarnation.peer_named(&self.db, to, named);
        }
        if status.code() != tonic::Code::PermissionDenied {
            return;
        }
        if let Some(theirs) = metadata_u64(status, crate::epoch::EPOCH_METADATA) {
            if crate::epoch::judge(self.epoch.get(), theirs) == crate::epoch::Verdict::PeerNewer {
                let reason = self.epoch.left_behind(to, theirs);
                self.epoch.fence(&self.db, reason);
            }
        }
    }

    pub fn client(&self, url: &str) -> Result<RaftPeerClient<Channel>, tonic::Status> {
        let mut channels = self.channels.lock().expect("channel pool lock");
        if self.tls.as_ref().is_some_and(PeerClientTls::changed) {
            // Rotated certificates: new channels present the new ones
            // (calls in flight finish on the old).
            channels.clear();
        }
        if let Some(ch) = channels.get(url) {
            return Ok(RaftPeerClient::new(ch.clone()).max_decoding_message_size(usize::MAX));
        }
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| tonic::Status::invalid_argument(format!("bad peer url {url}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.tls {
            let config = tls
                .config()
                .map_err(|e| tonic::Status::unavailable(format!("peer TLS: {e:#}")))?;
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| tonic::Status::unavailable(format!("peer TLS for {url}: {e}")))?;
        }
        let ch = endpoint.connect_lazy();
        channels.insert(url.to_string(), ch.clone());
        Ok(RaftPeerClient::new(ch).max_decoding_message_size(usize::MAX))
    }

    /// Wrap an openraft message for `to`.
    /// Ask member `to`, at `url`, for its ClusterInfo within `timeout`: how a
    /// member checks a peer's claim of a newer epoch (`node::epoch_claim`)
    /// and asks whether it is still a member (`node::membership_probe`). A
    /// refusal is returned as it came, for the caller to weigh
    /// ([`PeerClients::note_refusal`]).
    pub async fn ask_cluster_info(
        &self,
        to: NodeId,
        url: &str,
        timeout: Duration,
    ) -> Result<(), tonic::Status> {
        let mut client = self.client(url)?;
        let mut request = tonic::Request::new(self.payload(to, &())?);
        request.set_timeout(timeout);
        client.cluster_info(request).await.map(drop)
    }

    pub fn payload<T: serde::Serialize>(
        &self,
        to: NodeId,
        msg: &T,
    ) -> Result<RaftPayload, tonic::Status> {
        Ok(RaftPayload {
            header: self.header(to),
            data: codec::encode(msg).map_err(|e| tonic::Status::internal(e.to_string()))?,
        })
    }
}

/// A number a refusing peer put in its status's metadata under `key`.
fn metadata_u64(status: &tonic::Status, key: &str) -> Option<u64> {
    status.metadata().get(key)?.to_str().ok()?.parse().ok()
}

/// Builds a [`PeerConnection`] per target for openraft's replication tasks.
pub struct PeerNetwork {
    pub clients: Arc<PeerClients>,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerConnection {
        PeerConnection {
            clients: self.clients.clone(),
            target,
            url: node.peer_url.clone(),
        }
    }
}

pub struct PeerConnection {
    clients: Arc<PeerClients>,
    target: NodeId,
    url: String,
}

/// Connection failures make openraft back off; anything else is a network error.
fn to_rpc_error(status: tonic::Status) -> RpcError {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::from_string(status.message()))
        }
        _ => RPCError::Network(NetworkError::from_string(format!(
            "{:?}: {}",
            status.code(),
            status.message()
        ))),
    }
}

fn decode_reply<T: serde::de::DeserializeOwned>(reply: RaftPayload) -> Result<T, RpcError> {
    codec::decode(&reply.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

impl PeerConnection {
    /// A failed call's status as openraft's error, after checking it for a
    /// newer epoch.
    fn failed(&self, status: tonic::Status) -> RpcError {
        self.clients.note_refusal(self.target, &status);
        to_rpc_error(status)
    }

    fn client(&self) -> Result<RaftPeerClient<Channel>, RpcError> {
        self.clients.client(&self.url).map_err(to_rpc_error)
    }

    fn request<T: serde::Serialize>(
        &self,
        msg: &T,
        ttl: Duration,
    ) -> Result<tonic::Request<RaftPayload>, RpcError> {
        let payload = self
            .clients
            .payload(self.target, msg)
            .map_err(to_rpc_error)?;
        let mut req = tonic::Request::new(payload);
        req.set_timeout(ttl);
        Ok(req)
    }
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = std::fs::File;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RpcError> {
        let req = self.request(&rpc, option.hard_ttl())?;
        let reply = self
            .client()?
            .append_entries(req)
            .await
            .map_err(|s| self.failed(s))?;
        decode_reply(reply.into_inner())
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        _option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RpcError>>, RpcError>,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let clients = self.clients.clone();
            let target = self.target;
            // A request that cannot be encoded ends the stream; openraft retries.
            let outgoing = input.scan((), move |_, req| {
                futures::future::ready(clients.payload(target, &req).ok())
            });
            let mut client = self.client()?;
            let replies = match client.stream_append(outgoing).await {
                Ok(replies) => replies.into_inner(),
                Err(status) => {
                    // openraft applies `backoff()` only to a stream it is
                    // already reading; a stream that never opened (the peer is
                    // down) would be retried at once, thousands of times a
                    // second. Pause here instead.
                    tokio::time::sleep(UNREACHABLE_RETRY).await;
                    return Err(self.failed(status));
                }
            };
            let clients = self.clients.clone();
            let results = replies.map(move |item| {
                let payload = item.map_err(|s| {
                    clients.note_refusal(target, &s);
                    to_rpc_error(s)
                })?;
                decode_reply::<StreamAppendResult<TypeConfig>>(payload)
            });
            Ok(Box::pin(results) as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        let req = self.request(&rpc, option.hard_ttl())?;
        let reply = self.client()?.vote(req).await.map_err(|s| self.failed(s))?;
        decode_reply(reply.into_inner())
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        let req = self.request(&rpc, option.hard_ttl())?;
        let reply = self
            .client()?
            .pre_vote(req)
            .await
            .map_err(|s| self.failed(s))?;
        decode_reply(reply.into_inner())
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let meta = codec::encode(&snapshot.meta)
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        let vote =
            codec::encode(&vote).map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        let header = self.clients.header(self.target);
        let mut file = snapshot.snapshot;
        // Read the file on a blocking thread, a chunk at a time, into the request stream.
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(4);
        let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut first = true;
            loop {
                let mut buf = vec![0u8; SNAPSHOT_CHUNK];
                let n = file.read(&mut buf)?;
                buf.truncate(n);
                let chunk = SnapshotChunk {
                    header,
                    meta: if first { meta.clone() } else { Vec::new() },
                    vote: if first { vote.clone() } else { Vec::new() },
                    data: buf,
                    done: n == 0,
                };
                first = false;
                if tx.blocking_send(chunk).is_err() || n == 0 {
                    return Ok(());
                }
            }
        });
        let mut client = self
            .client()
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        let send = client.install_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx));
        let reply = tokio::select! {
            reply = send => reply,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        reader
            .await
            .map_err(|e| StreamingError::Unreachable(Unreachable::from_string(e.to_string())))?
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        let reply = reply.map_err(|s| {
            self.clients.note_refusal(self.target, &s);
            StreamingError::Unreachable(Unreachable::from_string(s.message()))
        })?;
        codec::decode(&reply.into_inner().data)
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RpcError> {
        let req = self.request(&req, option.hard_ttl())?;
        let reply = self
            .client()?
            .transfer_leader(req)
            .await
            .map_err(|s| self.failed(s))?;
        decode_reply(reply.into_inner())
    }

    fn backoff(&self) -> Option<Backoff> {
        Some(Backoff::new(std::iter::repeat(UNREACHABLE_RETRY)))
    }
}
