//! A running member, and everything a request asks of it.
//!
//! Clients may talk to any member; what it does with a request lives here,
//! one concern a file:
//!
//! - `propose`: the write path. A write, membership change or lease
//!   keep-alive goes to Raft on the leader, or to the leader over the peer
//!   port from a follower, retried only while it certainly was not carried out.
//! - `leader`: what the leader alone does with such a request (membership
//!   rules, lease deadlines).
//! - `read_index`: linearizable reads wait for a read index, obtained in
//!   rounds that concurrent reads share.
//! - `quota`: the space quota and its NOSPACE alarm.
//! - `liveness`: whether the leader this member names is alive (etcd's "no
//!   leader" when it is not).
//! - `lease_expiry`: the leader's loop that revokes expired leases.
//! - `epoch_claim`: a peer's claim of a newer epoch is checked with the member
//!   it names before it may fence this one.
//! - `reads` and `ops`: the questions and chores the handlers bring to this
//!   member's store (auth state, alarms, leases, hashes, backups, recovery),
//!   so no handler opens the database.
//!
//! The member's state is private to this module: `server` builds it from
//! [`NodeParts`], and everything else asks through its methods.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use openraft::ServerState;
use rocksdb::DB;

use crate::errors::ApiError;
use crate::metrics::Metrics;
use crate::proto::etcdserverpb::ResponseHeader;
use crate::raft::NodeId;
use crate::store::Mvcc;
use crate::transport::PeerClients;

mod applied;
mod epoch_claim;
mod leader;
mod lease_expiry;
mod liveness;
mod membership_probe;
mod ops;
mod propose;
mod quota;
mod read_index;
mod reads;
pub mod validate;

pub use applied::AppliedFollowers;
pub use leader::ForwardReply;
pub use leader::Forwarded;
pub use liveness::LeaderContact;
pub use propose::LocalError;

/// The etcd API level raftkv speaks (Maintenance.Status, `/version`); clients
/// use it for feature detection.
pub const ETCD_API_VERSION: &str = "3.5.0";
use quota::DiskUsage;

/// openraft, running on this member's log store and state machine.
pub type Raft = openraft::Raft<crate::raft::TypeConfig, crate::store::StateMachineStore>;

/// How long a client request may wait for a leader and a commit.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

/// Limits on client requests, as etcd's flags of the same names.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
}

/// A running member. Its state is its own: handlers ask it (see `reads` and
/// `ops`) rather than reaching into the database or its parts.
pub struct Node {
    id: NodeId,
    name: String,
    /// The peer URL this member advertises.
    peer_url: String,
    raft: Raft,
    db: Arc<DB>,
    mvcc: Mvcc,
    peers: Arc<PeerClients>,
    cluster_id: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    limits: Limits,
    /// `--quota-backend-bytes`: above this much data, writes that add data are
    /// refused and a NOSPACE alarm is raised.
    quota_bytes: u64,
    disk_usage: DiskUsage,
    data_dir: PathBuf,
    leader_contact: Arc<LeaderContact>,
    watch_hub: Arc<crate::watch::WatchHub>,
    lease_timers: Arc<crate::lease::LeaseTimers>,
    tokens: Arc<crate::auth::Tokens>,
    /// `--election-timeout`: the shortest time a follower waits for its
    /// leader before it campaigns.
    election_timeout: Duration,
    /// A leader not heard from (or, as leader, not acknowledged by a quorum)
    /// for this long is considered gone: the longest election timeout.
    leader_timeout: Duration,
    /// The cluster epoch and this member's fence (see `crate::epoch`).
    epoch: Arc<crate::epoch::EpochState>,
    removal: Arc<crate::removal::Removal>,
    /// This data dir's incarnation (see `crate::incarnation`).
    incarnation: Arc<crate::incarnation::Incarnation>,
    /// When a live leader (this member or another) was last known; what
    /// RecoverSolo judges quorum loss by.
    leader_seen: LeaderContact,
    /// The term this member last led in, and since when (see `liveness`).
    leading_since: liveness::LeadingSince,
    /// Where SaveBackup writes (`--backup-dir`).
    backup_dir: PathBuf,
    /// Linearizable reads waiting for a read index.
    reads: read_index::ReadIndexRounds,
    /// Peer claims of a newer epoch being checked (see `epoch_claim`).
    epoch_claims: epoch_claim::EpochClaims,
}

/// What `server` builds a member from: the parts it also hands to Raft and
/// the state machine.
pub struct NodeParts {
    pub id: NodeId,
    pub name: String,
    pub peer_url: String,
    pub raft: Raft,
    pub db: Arc<DB>,
    pub peers: Arc<PeerClients>,
    pub cluster_id: Arc<AtomicU64>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub quota_bytes: u64,
    pub data_dir: PathBuf,
    pub watch_hub: Arc<crate::watch::WatchHub>,
    pub lease_timers: Arc<crate::lease::LeaseTimers>,
    pub tokens: Arc<crate::auth::Tokens>,
    /// `--election-timeout`.
    pub election_timeout: Duration,
    pub epoch: Arc<crate::epoch::EpochState>,
    pub removal: Arc<crate::removal::Removal>,
    pub incarnation: Arc<crate::incarnation::Incarnation>,
    pub backup_dir: PathBuf,
}

impl Node {
    /// The member, with its read-index rounds and lease expiry running for as
    /// long as it lives.
    pub fn start(parts: NodeParts) -> Arc<Node> {
        let (reads, read_queue) = read_index::ReadIndexRounds::new();
        let node = Arc::new(Node {
            id: parts.id,
            name: parts.name,
            peer_url: parts.peer_url,
            raft: parts.raft,
            mvcc: Mvcc::new(parts.db.clone()),
            db: parts.db,
            peers: parts.peers,
            cluster_id: parts.cluster_id,
            metrics: parts.metrics,
            limits: parts.limits,
            quota_bytes: parts.quota_bytes,
            disk_usage: DiskUsage::default(),
            data_dir: parts.data_dir,
            leader_contact: Arc::default(),
            watch_hub: parts.watch_hub,
            lease_timers: parts.lease_timers,
            tokens: parts.tokens,
            election_timeout: parts.election_timeout,
            // openraft campaigns after one to two election timeouts.
            leader_timeout: parts.election_timeout * 2,
            epoch: parts.epoch,
            removal: parts.removal,
            incarnation: parts.incarnation,
            leader_seen: LeaderContact::default(),
            leading_since: Default::default(),
            backup_dir: parts.backup_dir,
            reads,
            epoch_claims: Default::default(),
        });
        tokio::spawn(read_index::serve_rounds(Arc::downgrade(&node), read_queue));
        tokio::spawn(lease_expiry::run(node.clone()));
        node
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The name this member publishes (`--name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The peer URL this member advertises.
    pub fn peer_url(&self) -> &str {
        &self.peer_url
    }

    /// openraft's handle, for what only Raft itself does (initialize, shut
    /// down, snapshot, the peer RPCs).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Reads of the MVCC store at this member's applied state.
    pub fn mvcc(&self) -> &Mvcc {
        &self.mvcc
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Where SaveBackup writes (`--backup-dir`).
    pub fn backup_dir(&self) -> &std::path::Path {
        &self.backup_dir
    }

    /// The cluster epoch and this member's fence (see `crate::epoch`).
    pub fn epoch(&self) -> &crate::epoch::EpochState {
        &self.epoch
    }

    /// Where committed changes are published to watchers.
    pub fn watch_hub(&self) -> &crate::watch::WatchHub {
        &self.watch_hub
    }

    /// When a live leader (this member or another) was last known.
    pub fn leader_seen(&self) -> &LeaderContact {
        &self.leader_seen
    }

    /// When this member last heard from a leader (the peer service touches it).
    pub fn leader_contact(&self) -> &Arc<LeaderContact> {
        &self.leader_contact
    }

    /// How long a leader may go unheard before it is considered gone.
    pub fn leader_timeout(&self) -> Duration {
        self.leader_timeout
    }

    /// Where Raft snapshots are kept and received.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.data_dir.join("snapshots")
    }

    /// Adopt the epoch of the cluster this member joins, durably.
    pub fn adopt_epoch(&self, epoch: u64) -> anyhow::Result<()> {
        self.epoch.adopt(&self.db, epoch)
    }

    /// Fence this member (durably): it serves nothing until recovered.
    pub fn fence(&self, reason: String) {
        self.epoch.fence(&self.db, reason)
    }

    /// Answer with cluster id `id` from now on (already recorded on disk).
    pub fn remember_cluster_id(&self, id: u64) {
        self.cluster_id.store(id, Ordering::Release);
    }

    /// Carry out a request another member forwarded to this one, which
    /// believes it leads.
    pub async fn run_forwarded(&self, req: &Forwarded) -> ForwardReply {
        leader::run_on_leader(self, req).await
    }

    /// Before a planned stop: if this member leads, hand leadership to the
    /// most caught-up other voter and wait until it has taken over (see
    /// `leader::hand_over_before_stop`).
    pub async fn hand_over_leadership(&self) -> Option<NodeId> {
        leader::hand_over_before_stop(self).await
    }

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
        self.caller(md).await?.require_root()
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

    /// The log index of this member's membership, if it holds one that does
    /// not list `member` (voter or learner); None if it lists it, or this
    /// member holds none yet (a member waiting to join).
    pub fn membership_without(&self, member: NodeId) -> Option<u64> {
        self.with_raft_metrics(|m| {
            let config = &m.membership_config;
            let index = config.log_id().as_ref()?.index;
            let membership = config.membership();
            let empty = membership.nodes().next().is_none();
            (!empty && membership.get_node(&member).is_none()).then_some(index)
        })
    }

    /// Whether (and why) this member was removed (see `crate::removal`).
    pub fn removal(&self) -> &Arc<crate::removal::Removal> {
        &self.removal
    }

    /// This data dir's incarnation (see `crate::incarnation`).
    pub fn incarnation(&self) -> &Arc<crate::incarnation::Incarnation> {
        &self.incarnation
    }

    /// Judge a peer request's incarnations against this member's records
    /// (see `crate::incarnation::judge`).
    pub fn judge_incarnation(
        &self,
        from_id: NodeId,
        from: u64,
        to: u64,
    ) -> crate::incarnation::Judgement {
        self.incarnation.judge(&self.db, from_id, from, to)
    }

    /// The term as the lease timers need it (see `crate::lease`).
    pub fn leader_term(&self) -> crate::lease::LeaderTerm {
        self.with_raft_metrics(|m| crate::lease::LeaderTerm {
            term: m.current_term,
            applied_own_entry: m
                .last_applied
                .as_ref()
                .is_some_and(|l| l.leader_id.term == m.current_term),
        })
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
        use liveness::LeaderEvidence;
        let leader = m.current_leader?;
        let evidence = if leader == self.id {
            LeaderEvidence::Itself {
                lone_voter: self.is_lone_voter(m),
                quorum_acked_ago: m
                    .last_quorum_acked
                    .as_ref()
                    .map(|at| openraft::Instant::elapsed(&**at)),
                leading_for: self.leading_since.leading_for(m.current_term),
            }
        } else {
            LeaderEvidence::Other {
                heard_ago: self.leader_contact.since(),
            }
        };
        if !liveness::is_alive(evidence, self.leader_timeout) {
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

    fn is_lone_voter(&self, m: &openraft::RaftMetrics<crate::raft::TypeConfig>) -> bool {
        m.membership_config
            .membership()
            .voter_ids()
            .all(|v| v == self.id)
    }

    /// Whether this leader may still vouch that no other leader exists: a
    /// quorum acknowledged a message it sent within the last election
    /// timeout. Any later leader needs a vote from one of those members,
    /// cast after it acknowledged, so it began its term at most one election
    /// timeout before now. Keep-alives are answered only under this lease (see
    /// `crate::lease`). Right after an election the first acknowledgements
    /// are awaited for up to one election timeout.
    pub async fn holds_leader_lease(&self) -> bool {
        let deadline = Instant::now() + self.election_timeout;
        loop {
            // (leads, a quorum (a lone voter is its own) acknowledged in time)
            let (leads, held) = self.with_raft_metrics(|m| {
                let acked = m
                    .last_quorum_acked
                    .is_some_and(|sent| openraft::Instant::elapsed(&*sent) < self.election_timeout);
                let leads = m.state == ServerState::Leader;
                (leads, leads && (self.is_lone_voter(m) || acked))
            });
            if held || !leads || Instant::now() >= deadline {
                return held;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
}
