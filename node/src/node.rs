//! A running member: proposes writes, serves linearizable reads, and forwards
//! to the leader whatever only the leader can do.
//!
//! Clients may talk to any member. A write (or membership change) that reaches a
//! follower is sent to the leader over the peer port (`Forward`); a linearizable
//! read on a follower asks the leader for its read index (`ReadIndex`) and waits
//! until the local state machine has applied up to it. A proposal is retried only
//! when it certainly was not applied (no leader yet, or the target was not the
//! leader), never after an outcome that is unknown, so a retry can't apply twice.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use openraft::raft::ReadPolicy;
use openraft::ServerState;
use rocksdb::DB;
use serde::Deserialize;
use serde::Serialize;

use crate::errors::ApiError;
use crate::metrics::Metrics;
use crate::proto::etcdserverpb::ResponseHeader;
use crate::proto::raftkvpb;
use crate::raft::codec;
use crate::raft::network::PeerClients;
use crate::raft::Command;
use crate::raft::NodeId;
use crate::raft::Raft;
use crate::store::Mvcc;

/// How long a client request may wait for a leader and a commit.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

/// Limits on client requests, as etcd's flags of the same names.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
}

/// A request a follower hands to the leader.
#[derive(Debug, Serialize, Deserialize)]
pub enum Forwarded {
    Write(Command),
    AddMember {
        id: NodeId,
        peer_url: String,
        learner: bool,
    },
    PromoteMember {
        id: NodeId,
    },
    RemoveMember {
        id: NodeId,
    },
    LeaseKeepAlive {
        id: i64,
    },
    LeaseTimeToLive {
        id: i64,
    },
}

/// The leader's answer to a [`Forwarded`] request.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardReply {
    Write(crate::raft::CommandResult),
    Done,
    /// A lease's (remaining, granted) TTL in seconds; `None` if it does not exist.
    Lease(Option<(i64, i64)>),
    Error {
        code: i32,
        message: String,
    },
}

/// The database's size on disk, measured at most every 250ms (a directory
/// walk per write would cost more than the write).
#[derive(Default)]
pub struct DiskUsage {
    last: std::sync::Mutex<Option<(Instant, u64)>>,
}

impl DiskUsage {
    pub fn get(&self, data_dir: &std::path::Path) -> u64 {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some((at, bytes)) if at.elapsed() < Duration::from_millis(250) => bytes,
            _ => {
                let bytes = crate::store::disk_size(data_dir);
                *last = Some((Instant::now(), bytes));
                bytes
            }
        }
    }

    /// Forget the cached size, so the next check measures again: after a
    /// defragment, a write right behind it must not be judged by the old size.
    pub fn invalidate(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// When this member last heard from a leader, for followers to notice a leader
/// that is gone even when no new one can be elected (etcd reports "no leader"
/// then, and so do we: in Status, `/readyz`, and by refusing to forward).
pub struct LeaderContact {
    started: Instant,
    last_ms: AtomicU64,
}

impl Default for LeaderContact {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl LeaderContact {
    pub fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    pub fn since(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

pub struct Node {
    pub id: NodeId,
    pub name: String,
    /// The peer URL this member advertises.
    pub peer_url: String,
    pub raft: Raft,
    pub db: Arc<DB>,
    pub mvcc: Mvcc,
    pub peers: Arc<PeerClients>,
    pub cluster_id: Arc<AtomicU64>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// `--quota-backend-bytes`: above this much data, writes that add data are
    /// refused and a NOSPACE alarm is raised.
    pub quota_bytes: u64,
    pub disk_usage: DiskUsage,
    pub data_dir: PathBuf,
    pub leader_contact: Arc<LeaderContact>,
    pub watch_hub: Arc<crate::watch::WatchHub>,
    pub lease_timers: Arc<crate::lease::LeaseTimers>,
    pub tokens: Arc<crate::auth::Tokens>,
    /// A leader not heard from (or, as leader, not acknowledged by a quorum)
    /// for this long is considered gone: the longest election timeout.
    pub leader_timeout: Duration,
    /// The cluster epoch and this member's fence (see `crate::epoch`).
    pub epoch: Arc<crate::epoch::EpochState>,
    /// When a live leader (this member or another) was last known; what
    /// RecoverSolo judges quorum loss by.
    pub leader_seen: Arc<LeaderContact>,
    /// Where SaveBackup writes (`--backup-dir`).
    pub backup_dir: PathBuf,
    /// Linearizable reads waiting for a read index.
    pub reads: crate::read_index::ReadIndexRounds,
}

impl Node {
    /// Who sent a request (see `crate::auth`): fails when auth is enabled and
    /// the request carries no valid token.
    pub async fn caller(
        &self,
        md: &tonic::metadata::MetadataMap,
    ) -> Result<crate::auth::Caller, ApiError> {
        match self.tokens.caller(&self.db, md) {
            // The token may have been issued through another member and not be
            // applied here yet: catch up with the leader's commit, look again.
            Err(e) if e == crate::auth::invalid_token() => {
                self.read_barrier().await?;
                self.tokens.caller(&self.db, md)
            }
            other => other,
        }
    }

    /// Refuse the call unless its caller holds the root role (always allowed
    /// while auth is disabled): the check of every admin-only RPC.
    pub async fn require_root(&self, md: &tonic::metadata::MetadataMap) -> Result<(), ApiError> {
        self.caller(md).await?.require_root(&self.db)
    }

    /// Refuse a write that adds data when the space quota is exhausted, raising
    /// the NOSPACE alarm for this member (once) so every member refuses too.
    pub async fn check_quota(&self) -> Result<(), ApiError> {
        if self.disk_usage.get(&self.data_dir) <= self.quota_bytes {
            return Ok(());
        }
        if !crate::store::alarm::space_alarm_raised(&self.db) {
            use crate::proto::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmType};
            let raise = Command(raftkvpb::Command {
                op: Some(raftkvpb::command::Op::Alarm(AlarmRequest {
                    action: AlarmAction::Activate as i32,
                    member_id: self.id,
                    alarm: AlarmType::Nospace as i32,
                })),
            });
            tracing::warn!(
                quota = self.quota_bytes,
                "space quota exceeded: raising the NOSPACE alarm"
            );
            self.propose(raise).await?;
        }
        Err(crate::store::alarm::no_space())
    }

    /// A copy of openraft's latest metrics for this member.
    pub fn raft_metrics(&self) -> openraft::RaftMetrics<crate::raft::TypeConfig> {
        self.with_raft_metrics(|m| m.clone())
    }

    /// Look at openraft's latest metrics without copying them: the request path
    /// reads a field or two per request, and a copy allocates its maps.
    pub fn with_raft_metrics<R>(
        &self,
        f: impl FnOnce(&openraft::RaftMetrics<crate::raft::TypeConfig>) -> R,
    ) -> R {
        use openraft::type_config::async_runtime::WatchReceiver;
        f(&self.raft.metrics().borrow_watched())
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::Acquire)
    }

    /// The header every response carries.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id(),
            member_id: self.id,
            revision,
            raft_term: self.current_term(),
        }
    }

    /// The Raft term this member is in.
    pub fn current_term(&self) -> u64 {
        self.with_raft_metrics(|m| m.current_term)
    }

    /// Fill in a header the state machine left partial (it only knows the revision).
    pub fn complete_header(&self, header: &mut Option<ResponseHeader>) {
        let revision = header
            .as_ref()
            .map_or_else(|| self.mvcc.current_revision(), |h| h.revision);
        *header = Some(self.header(revision));
    }

    /// The current leader and its peer URL, if one is known and alive.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        if self.epoch.fenced().is_some() {
            return None;
        }
        self.with_raft_metrics(|m| self.live_leader(m))
    }

    fn live_leader(
        &self,
        m: &openraft::RaftMetrics<crate::raft::TypeConfig>,
    ) -> Option<(NodeId, String)> {
        let leader = m.current_leader?;
        let stale = if leader == self.id {
            // A lone voter is its own quorum; otherwise the followers must
            // have acknowledged the leader recently.
            let alone = m
                .membership_config
                .membership()
                .voter_ids()
                .all(|v| v == self.id);
            !alone
                && m.last_quorum_acked
                    .is_some_and(|at| openraft::Instant::elapsed(&*at) > self.leader_timeout)
        } else {
            self.leader_contact.since() > self.leader_timeout
        };
        if stale {
            return None;
        }
        let url = m
            .membership_config
            .membership()
            .get_node(&leader)?
            .peer_url
            .clone();
        Some((leader, url))
    }

    pub fn is_leader(&self) -> bool {
        self.with_raft_metrics(|m| m.state == ServerState::Leader)
    }

    /// Wait (briefly) for a leader to be known.
    async fn await_leader(&self, deadline: Instant) -> Result<(NodeId, String), ApiError> {
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            if let Some(why) = self.epoch.fenced() {
                return Err(ApiError::unavailable(format!(
                    "raftkv: this member is fenced: {why}"
                )));
            }
            if Instant::now() >= deadline {
                return Err(ApiError::no_leader());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Replicate a command and return what applying it produced.
    pub async fn propose(
        &self,
        cmd: Command,
    ) -> Result<raftkvpb::command_result::Result, ApiError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let outcome = self.propose_until(cmd, deadline).await;
        match &outcome {
            Ok(_) => self
                .metrics
                .proposals_committed
                .fetch_add(1, Ordering::Relaxed),
            Err(_) => self
                .metrics
                .proposals_failed
                .fetch_add(1, Ordering::Relaxed),
        };
        match outcome?.0.result {
            Some(raftkvpb::command_result::Result::Error(e)) => Err(e.into()),
            Some(r) => Ok(r),
            None => Err(ApiError::internal("the state machine returned no result")),
        }
    }

    /// Replicate `cmd` through the leader, wherever it is.
    async fn propose_until(
        &self,
        cmd: Command,
        deadline: Instant,
    ) -> Result<crate::raft::CommandResult, ApiError> {
        match self
            .on_leader_until(Forwarded::Write(cmd), deadline)
            .await?
        {
            ForwardReply::Write(r) => Ok(r),
            _ => Err(ApiError::internal("unexpected reply to a forwarded write")),
        }
    }

    /// Propose on this member, which believes it is the leader.
    ///
    /// `NotLeader` (safe to retry) only when nothing was proposed. If leadership
    /// is lost after the proposal, the entry may still commit under the next
    /// leader, so the outcome is unknown: that is etcd's "leader changed", which
    /// clients do not retry blindly either.
    pub async fn propose_local(
        &self,
        cmd: Command,
    ) -> Result<crate::raft::CommandResult, LocalError> {
        if !self.is_leader() {
            return Err(LocalError::NotLeader);
        }
        let started = Instant::now();
        match self.raft.client_write(cmd).await {
            Ok(resp) => {
                self.metrics.proposal.record(started.elapsed());
                Ok(resp.data)
            }
            Err(e) if e.forward_to_leader().is_some() => {
                Err(LocalError::Failed(ApiError::leader_changed()))
            }
            Err(e) => Err(LocalError::Failed(ApiError::unavailable(e))),
        }
    }

    /// Send a request to the leader over the peer port.
    async fn forward(
        &self,
        leader: NodeId,
        url: &str,
        req: &Forwarded,
        deadline: Instant,
    ) -> Result<ForwardReply, ApiError> {
        let mut client = self.peers.client(url)?;
        let mut request = tonic::Request::new(self.peers.payload(leader, req)?);
        request.set_timeout(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100)),
        );
        match client.forward(request).await {
            Ok(reply) => codec::decode(&reply.into_inner().data).map_err(ApiError::internal),
            // No connection means the request was never sent: the caller may
            // retry (the old leader is gone and a new one is being elected).
            Err(s) if never_sent(&s) => Ok(ForwardReply::Error {
                code: tonic::Code::Unavailable as i32,
                message: ApiError::not_leader().message,
            }),
            // The leader may have applied it or not: report, never retry.
            Err(s) if s.code() == tonic::Code::DeadlineExceeded => Err(ApiError::timeout()),
            Err(s) => Err(ApiError::unavailable(format!(
                "forwarding to leader {leader:x}: {}",
                s.message()
            ))),
        }
    }

    /// Make the next local read linearizable: afterwards the state machine has
    /// applied everything committed before this call began. The read index
    /// comes from a round shared with concurrent reads (see `crate::read_index`).
    pub async fn read_barrier(&self) -> Result<(), ApiError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            self.await_leader(deadline).await?;
            let round = tokio::time::timeout_at(deadline.into(), self.reads.read_index());
            let index = round.await.map_err(|_| ApiError::timeout())??;
            if let Some(index) = index {
                let wait = deadline.saturating_duration_since(Instant::now());
                return self
                    .raft
                    .wait(Some(wait))
                    .applied_index_at_least(Some(index), "linearizable read")
                    .await
                    .map(|_| ())
                    .map_err(|_| ApiError::timeout());
            }
            if Instant::now() >= deadline {
                return Err(ApiError::timeout());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One read-index round: ask the leader (this member, or over the peer
    /// port) for its read index. `None` when there is no leader to ask yet.
    pub async fn read_index_round(&self) -> crate::read_index::ReadIndex {
        let Some((leader, url)) = self.leader() else {
            return Ok(None);
        };
        if leader != self.id {
            let deadline = Instant::now() + REQUEST_TIMEOUT;
            return self.remote_read_index(leader, &url, deadline).await;
        }
        match self.read_index_local().await {
            Ok(i) => Ok(Some(i)),
            Err(LocalError::NotLeader) => Ok(None),
            Err(LocalError::Failed(e)) => Err(e),
        }
    }

    /// The leader's read index: confirm leadership with a quorum (ReadIndex),
    /// then return the log index a read must wait for.
    pub async fn read_index_local(&self) -> Result<u64, LocalError> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(read) => Ok(read.index()),
            Err(e) if e.forward_to_leader().is_some() => Err(LocalError::NotLeader),
            Err(e) => Err(LocalError::Failed(ApiError::unavailable(e))),
        }
    }

    async fn remote_read_index(
        &self,
        leader: NodeId,
        url: &str,
        deadline: Instant,
    ) -> Result<Option<u64>, ApiError> {
        let mut client = self.peers.client(url)?;
        let mut request = tonic::Request::new(self.peers.payload(leader, &())?);
        request.set_timeout(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100)),
        );
        let reply = match client.read_index(request).await {
            Ok(reply) => reply,
            // Asking for a read index changes nothing: any failure may be retried
            // until the deadline (e.g. while a new leader is elected).
            Err(s) if s.code() == tonic::Code::Unavailable => return Ok(None),
            Err(s) => {
                return Err(ApiError::unavailable(format!(
                    "read index from leader {leader:x}: {}",
                    s.message()
                )))
            }
        };
        match codec::decode::<Result<u64, (i32, String)>>(&reply.into_inner().data)
            .map_err(ApiError::internal)?
        {
            Ok(i) => Ok(Some(i)),
            Err((code, message)) if is_not_leader(code, &message) => Ok(None),
            Err((code, message)) => Err(ApiError::new(code.into(), message)),
        }
    }

    /// Run a membership change on the leader, wherever this member is.
    pub async fn change_membership(&self, req: Forwarded) -> Result<(), ApiError> {
        self.on_leader(req).await.map(|_| ())
    }

    /// Carry out `req` on the leader (here, or forwarded), retrying only while
    /// nothing was done (no leader yet, or the target was not the leader).
    pub async fn on_leader(&self, req: Forwarded) -> Result<ForwardReply, ApiError> {
        self.on_leader_until(req, Instant::now() + REQUEST_TIMEOUT)
            .await
    }

    async fn on_leader_until(
        &self,
        req: Forwarded,
        deadline: Instant,
    ) -> Result<ForwardReply, ApiError> {
        loop {
            let (leader, url) = self.await_leader(deadline).await?;
            let reply = if leader == self.id {
                crate::membership::run_on_leader(self, &req).await
            } else {
                let write = matches!(req, Forwarded::Write(_));
                if write {
                    self.metrics
                        .proposals_forwarded
                        .fetch_add(1, Ordering::Relaxed);
                }
                let started = Instant::now();
                let reply = self.forward(leader, &url, &req, deadline).await?;
                if write {
                    self.metrics.forward.record(started.elapsed());
                }
                reply
            };
            match reply {
                ForwardReply::Error { code, message } if is_not_leader(code, &message) => {}
                ForwardReply::Error { code, message } => {
                    return Err(ApiError::new(code.into(), message))
                }
                other => return Ok(other),
            }
            if Instant::now() >= deadline {
                return Err(ApiError::timeout());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Why a request on the local member did not succeed.
#[derive(Debug)]
pub enum LocalError {
    /// This member is not (or no longer) the leader: safe to retry elsewhere.
    NotLeader,
    Failed(ApiError),
}

impl LocalError {
    pub fn into_api(self) -> ApiError {
        match self {
            LocalError::NotLeader => ApiError::not_leader(),
            LocalError::Failed(e) => e,
        }
    }
}

/// Whether a failed peer call certainly never reached the peer: tonic reports a
/// refused or timed-out connection attempt as Unavailable "tcp connect error".
fn never_sent(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::Unavailable && s.message().contains("tcp connect error")
}

/// The reply for "not the leader, nothing proposed", which a member retries.
fn is_not_leader(code: i32, message: &str) -> bool {
    code == tonic::Code::Unavailable as i32 && message == ApiError::not_leader().message
}
