//! Talks to the members: gathers what they report (for the planner) and carries
//! out the planner's Raft steps through raftkv's Admin service and etcd's
//! Cluster API.
//!
//! Where a member lives, and whether it speaks TLS, is injected
//! ([`MemberAddresses`]): on Kubernetes it is the pod's name under the headless
//! Service, in tests a port on 127.0.0.1.
//!
//! Every step tolerates having been done already (the operator may have crashed
//! after the call and before it saw the result): "member ID already exist" on
//! add and "member not found" on remove count as done; Initialize is idempotent
//! on the node for the same token.

use super::addresses::host_of;
pub use super::addresses::MemberAddresses;
use super::admin::admin_client::AdminClient;
use super::admin::{AddMemberRequest, InitializeRequest, MemberStatusRequest};
use super::observed::{MemberReport, Observed, RaftMember, Role};
use super::planner::Step;
use crate::naming::ordinal_of;
use raftkv_proto::etcdserverpb::cluster_client::ClusterClient;
use raftkv_proto::etcdserverpb::MemberListRequest;
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Why a step or an observation failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("connecting to member at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("{call} on {endpoint}: {status}")]
    Admin {
        call: &'static str,
        endpoint: String,
        status: tonic::Status,
    },
    #[error("{call} via {endpoint}: {source}")]
    Etcd {
        call: &'static str,
        endpoint: String,
        source: etcd_client::Error,
    },
    #[error("no member answered, so there is nobody to send {0:?} to")]
    NoMemberToAsk(Step),
    #[error("{0:?} is a Kubernetes step, not a Raft one: the controller carries it out")]
    NotARaftStep(Step),
}

/// What a Raft step achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The step took effect now or had already taken effect.
    Done,
    /// Initialize: the cluster id, and whether this call created the cluster.
    Initialized { cluster_id: u64, now: bool },
    /// The node refused for now in a way that resolves by itself (a learner not
    /// yet in sync); plan again later.
    NotYet(String),
}

/// The ordinal of the member to take the membership from: of the members
/// that say they lead (at their own ordinal), the one in the highest term
/// (the lowest ordinal among equals, which Raft never elects twice in a term).
/// Whether it still leads is then proven by its linearizable member list.
pub fn current_leader(reports: &BTreeMap<u32, MemberReport>) -> Option<u32> {
    reports
        .iter()
        .filter(|(&ord, r)| r.role == Role::Leader && ordinal_of(r.id) == Some(ord))
        .max_by_key(|(&ord, r)| (r.term, std::cmp::Reverse(ord)))
        .map(|(&ord, _)| ord)
}

/// What the members reported in one pass.
#[derive(Debug, Clone, Default)]
pub struct MemberObservation {
    pub reports: BTreeMap<u32, MemberReport>,
    pub membership: Option<Vec<RaftMember>>,
}

impl MemberObservation {
    /// Copy into the planner's input.
    pub fn fill(self, observed: &mut Observed) {
        observed.reports = self.reports;
        observed.membership = self.membership;
    }
}

/// Carries out Raft steps for one RaftCluster.
pub struct Executor<A> {
    addresses: A,
    /// Passed to Admin.Initialize: the RaftCluster's metadata.uid.
    cluster_token: String,
    timeout: Duration,
}

impl<A: MemberAddresses> Executor<A> {
    pub fn new(addresses: A, cluster_token: impl Into<String>) -> Executor<A> {
        Executor {
            addresses,
            cluster_token: cluster_token.into(),
            timeout: Duration::from_secs(5),
        }
    }

    /// Per-call limit (default 5 s): a hung member must not stall the controller.
    pub fn with_timeout(mut self, timeout: Duration) -> Executor<A> {
        self.timeout = timeout;
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn addresses(&self) -> &A {
        &self.addresses
    }

    pub(crate) async fn admin(
        &self,
        ordinal: u32,
    ) -> Result<(AdminClient<Channel>, String), ExecError> {
        let (channel, endpoint) = self.channel(ordinal).await?;
        Ok((AdminClient::new(channel), endpoint))
    }

    /// A gRPC channel to the member's client listener (Admin and etcd's
    /// services), bounded by the per-call timeout.
    async fn channel(&self, ordinal: u32) -> Result<(Channel, String), ExecError> {
        let endpoint = self.addresses.client_endpoint(ordinal);
        let connect_err = |source| ExecError::Connect {
            endpoint: endpoint.clone(),
            source,
        };
        let channel = match self.addresses.tls() {
            None => Endpoint::from_shared(format!("http://{endpoint}")),
            Some(tls) => Endpoint::from_shared(format!("https://{endpoint}"))
                .and_then(|e| e.tls_config(tls.config(host_of(&endpoint)))),
        }
        .map_err(connect_err)?
        .connect_timeout(self.timeout)
        .timeout(self.timeout)
        .connect()
        .await
        .map_err(connect_err)?;
        Ok((channel, endpoint))
    }

    pub(crate) async fn etcd(
        &self,
        ordinal: u32,
    ) -> Result<(etcd_client::Client, String), ExecError> {
        let endpoint = self.addresses.client_endpoint(ordinal);
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(self.timeout)
            .with_timeout(self.timeout);
        let url = match self.addresses.tls() {
            None => format!("http://{endpoint}"),
            Some(tls) => {
                options = options.with_tls(tls.config(host_of(&endpoint)));
                format!("https://{endpoint}")
            }
        };
        let client = etcd_client::Client::connect([url], Some(options))
            .await
            .map_err(|source| ExecError::Etcd {
                call: "connect",
                endpoint: endpoint.clone(),
                source,
            })?;
        Ok((client, endpoint))
    }

    /// etcd MoveLeader on the member at `from` (which must lead): it hands
    /// leadership to member `to` and answers once `to` leads.
    pub async fn move_leader(&self, from: u32, to: u64) -> Result<(), ExecError> {
        let (mut client, endpoint) = self.etcd(from).await?;
        client
            .move_leader(to)
            .await
            .map_err(|source| ExecError::Etcd {
                call: "MoveLeader",
                endpoint,
                source,
            })?;
        Ok(())
    }

    /// Admin.MemberStatus of the member at `ordinal`.
    pub async fn member_status(&self, ordinal: u32) -> Result<MemberReport, ExecError> {
        let (mut admin, endpoint) = self.admin(ordinal).await?;
        let r = admin
            .member_status(MemberStatusRequest {})
            .await
            .map_err(|status| ExecError::Admin {
                call: "MemberStatus",
                endpoint,
                status,
            })?
            .into_inner();
        Ok(MemberReport {
            id: r.id,
            role: Role::parse(&r.role),
            term: r.term,
            leader: r.leader,
            committed_index: r.committed_index,
            applied_index: r.applied_index,
            last_log_index: r.last_log_index,
            cluster_id: r.cluster_id,
            not_ready_reason: r.not_ready_reason,
            epoch: r.epoch,
            millis_since_leader: r.millis_since_leader,
        })
    }

    /// Ask every pod in `ordinals` for its status (concurrently; an unreachable
    /// pod is simply absent), then the leader for the membership.
    pub async fn observe(&self, ordinals: impl IntoIterator<Item = u32>) -> MemberObservation {
        let ordinals: Vec<u32> = ordinals.into_iter().collect();
        let answers = futures::future::join_all(
            ordinals
                .iter()
                .map(|&o| async move { (o, self.member_status(o).await) }),
        )
        .await;
        let mut reports = BTreeMap::new();
        for (ordinal, answer) in answers {
            match answer {
                Ok(report) => {
                    reports.insert(ordinal, report);
                }
                Err(err) => tracing::debug!(ordinal, error = %err, "member did not answer"),
            }
        }
        // Only the current leader's view counts: a removed member keeps running
        // (until its pod goes) with a membership that still lists itself, and a
        // leader cut off from its quorum keeps its old view (and its claim) for
        // a few election timeouts. Its list is read linearizably, which only a
        // leader a quorum still follows can answer.
        let membership = match current_leader(&reports) {
            Some(ord) => match self.member_list(ord).await {
                Ok(list) => Some(list),
                Err(err) => {
                    tracing::debug!(error = %err, "leader did not list members");
                    None
                }
            },
            None => None,
        };
        MemberObservation {
            reports,
            membership,
        }
    }

    /// etcd MemberList through the member at `ordinal`, linearizable: the
    /// member first confirms with a quorum that its view is current (a leader
    /// cut off from its quorum cannot, and the call fails).
    pub async fn member_list(&self, ordinal: u32) -> Result<Vec<RaftMember>, ExecError> {
        let (channel, endpoint) = self.channel(ordinal).await?;
        let list = ClusterClient::new(channel)
            .member_list(MemberListRequest { linearizable: true })
            .await
            .map_err(|status| ExecError::Admin {
                call: "MemberList",
                endpoint,
                status,
            })?
            .into_inner();
        Ok(list
            .members
            .iter()
            .map(|m| RaftMember {
                id: m.id,
                is_learner: m.is_learner,
                name: m.name.clone(),
            })
            .collect())
    }

    /// Carry out a Raft step. `observed` picks whom to ask: the leader if known
    /// (any member would forward, but the leader saves a hop and is surely in
    /// the cluster).
    pub async fn execute(&self, step: &Step, observed: &Observed) -> Result<Outcome, ExecError> {
        match step {
            Step::Initialize => {
                self.initialize(observed.restore_from_backup.as_deref())
                    .await
            }
            Step::AddLearner { id, ordinal } => {
                let via = self.via(step, observed)?;
                self.add_learner(via, *id, *ordinal).await
            }
            Step::Promote { id } => {
                let via = self.via(step, observed)?;
                self.promote(via, *id).await
            }
            Step::RemoveMember { id } => {
                let via = self.via(step, observed)?;
                self.remove(via, *id).await
            }
            Step::ScaleStatefulSet { .. }
            | Step::DeleteVolume { .. }
            | Step::ResetMember { .. } => Err(ExecError::NotARaftStep(step.clone())),
        }
    }

    /// The ordinal to send a membership call to: the leader, else any voter that answered.
    fn via(&self, step: &Step, observed: &Observed) -> Result<u32, ExecError> {
        let voter = |r: &MemberReport| {
            observed
                .membership
                .as_deref()
                .is_some_and(|ms| ms.iter().any(|m| m.id == r.id && !m.is_learner))
        };
        observed
            .reports
            .iter()
            .find(|(_, r)| r.role == Role::Leader && voter(r))
            .or_else(|| observed.reports.iter().find(|(_, r)| voter(r)))
            .map(|(&ord, _)| ord)
            .ok_or_else(|| ExecError::NoMemberToAsk(step.clone()))
    }

    async fn initialize(&self, restore_from_backup: Option<&str>) -> Result<Outcome, ExecError> {
        let (mut admin, endpoint) = self.admin(0).await?;
        let r = admin
            .initialize(InitializeRequest {
                cluster_token: self.cluster_token.clone(),
                restore_from_backup: restore_from_backup.unwrap_or_default().to_string(),
            })
            .await
            .map_err(|status| ExecError::Admin {
                call: "Initialize",
                endpoint,
                status,
            })?
            .into_inner();
        Ok(Outcome::Initialized {
            cluster_id: r.cluster_id,
            now: r.initialized_now,
        })
    }

    async fn add_learner(&self, via: u32, id: u64, ordinal: u32) -> Result<Outcome, ExecError> {
        let (mut admin, endpoint) = self.admin(via).await?;
        let request = AddMemberRequest {
            id,
            peer_url: self.addresses.peer_url(ordinal),
            is_learner: true,
        };
        match admin.add_member(request).await {
            Ok(_) => Ok(Outcome::Done),
            // Added by an earlier run that crashed before seeing the answer.
            Err(status)
                if status.code() == tonic::Code::FailedPrecondition
                    && status.message().contains("member ID already exist") =>
            {
                Ok(Outcome::Done)
            }
            Err(status) => Err(ExecError::Admin {
                call: "AddMember",
                endpoint,
                status,
            }),
        }
    }

    async fn promote(&self, via: u32, id: u64) -> Result<Outcome, ExecError> {
        let (mut client, endpoint) = self.etcd(via).await?;
        match client.member_promote(id).await {
            Ok(_) => Ok(Outcome::Done),
            Err(etcd_client::Error::GRpcStatus(status))
                if status.code() == tonic::Code::FailedPrecondition
                    && status.message().contains("in sync with leader") =>
            {
                Ok(Outcome::NotYet(status.message().to_string()))
            }
            Err(source) => Err(ExecError::Etcd {
                call: "MemberPromote",
                endpoint,
                source,
            }),
        }
    }

    async fn remove(&self, via: u32, id: u64) -> Result<Outcome, ExecError> {
        let (mut client, endpoint) = self.etcd(via).await?;
        match client.member_remove(id).await {
            Ok(_) => Ok(Outcome::Done),
            // Removed by an earlier run that crashed before seeing the answer.
            Err(etcd_client::Error::GRpcStatus(status))
                if status.code() == tonic::Code::NotFound =>
            {
                Ok(Outcome::Done)
            }
            Err(source) => Err(ExecError::Etcd {
                call: "MemberRemove",
                endpoint,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::current_leader;
    use crate::membership::{MemberReport, Role};
    use std::collections::BTreeMap;

    fn report(id: u64, role: Role, term: u64) -> MemberReport {
        MemberReport {
            id,
            role,
            term,
            leader: 0,
            committed_index: 0,
            applied_index: 0,
            last_log_index: 0,
            cluster_id: 1,
            not_ready_reason: String::new(),
            epoch: 0,
            millis_since_leader: 0,
        }
    }

    #[test]
    fn of_two_leader_claims_the_higher_term_is_asked() {
        // Pod 0 led in term 3 and was cut off; pod 2 leads in term 4.
        let reports = BTreeMap::from([
            (0, report(1, Role::Leader, 3)),
            (1, report(2, Role::Follower, 4)),
            (2, report(3, Role::Leader, 4)),
        ]);
        assert_eq!(current_leader(&reports), Some(2));
        // A member claiming to lead at another pod's ordinal is not asked.
        let moved = BTreeMap::from([(0, report(2, Role::Leader, 5))]);
        assert_eq!(current_leader(&moved), None);
        let none = BTreeMap::from([(0, report(1, Role::Follower, 5))]);
        assert_eq!(current_leader(&none), None);
    }
}
