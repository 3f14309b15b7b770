//! What the membership planner decides from: the cluster as observed at one
//! moment, gathered by the controller (Kubernetes objects) and the executor
//! (what each member reports). Plain data, so tests can write any situation down.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A member's role as it reports it (Admin.MemberStatus `role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    /// Not (or no longer) running Raft: "shutdown", or a role this operator does not know.
    Other,
}

impl Role {
    pub fn parse(role: &str) -> Role {
        match role {
            "leader" => Role::Leader,
            "follower" => Role::Follower,
            "candidate" => Role::Candidate,
            "learner" => Role::Learner,
            _ => Role::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Other => "other",
        }
    }
}

/// What one pod's member says about itself (Admin.MemberStatus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberReport {
    pub id: u64,
    pub role: Role,
    /// The Raft term it is in (of two members claiming to lead, the one in
    /// the higher term does).
    pub term: u64,
    /// 0 when no leader is known.
    pub leader: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    /// 0 while a `--join` member is empty and waiting to be added.
    pub cluster_id: u64,
    /// Empty when the member is ready (in the cluster, leader known, caught up).
    pub not_ready_reason: String,
    /// Solo recoveries its cluster has been through (bumped by each one).
    pub epoch: u64,
    /// How long it has not heard from a leader; 0 while it leads or follows one.
    pub millis_since_leader: u64,
}

impl MemberReport {
    pub fn is_ready(&self) -> bool {
        self.not_ready_reason.is_empty()
    }

    /// Has never belonged to a cluster: safe to add as a new member. A member
    /// that reports a cluster id carries data from some earlier life.
    pub fn is_empty(&self) -> bool {
        self.cluster_id == 0
    }
}

/// One member pod as Kubernetes reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodState {
    /// The StatefulSet revision its template came from (the
    /// `controller-revision-hash` label).
    pub revision: Option<String>,
    /// Its Ready condition is True.
    pub ready: bool,
    /// How long its Ready condition has had its current value.
    pub ready_for: Duration,
    /// It is being deleted.
    pub terminating: bool,
}

/// One entry of the Raft membership (etcd MemberList).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftMember {
    pub id: u64,
    pub is_learner: bool,
    /// Empty for a member that was added but has not started yet.
    pub name: String,
}

/// Everything the planner looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// `spec.replicas`.
    pub desired_replicas: u32,
    /// The StatefulSet's `spec.replicas`; `None` if it does not exist yet.
    pub statefulset_replicas: Option<u32>,
    /// Reports by pod ordinal, for every pod that answered. A pod missing here
    /// is not running or not reachable.
    pub reports: BTreeMap<u32, MemberReport>,
    /// Ordinals that have a data volume (PVC), whether or not a pod uses it.
    pub volumes: BTreeSet<u32>,
    /// The membership as the leader reports it; `None` when no leader answered.
    pub membership: Option<Vec<RaftMember>>,
    /// `status.initialized` is set: member 1 was initialized, never do it again.
    pub initialized: bool,
    /// How long the current learner has been waiting to catch up (from
    /// `status.pendingLearner`), so one that never does is reported.
    pub learner_waiting_for: Option<Duration>,
    /// `spec.restore.fromBackup`: Initialize starts the cluster from this backup file.
    pub restore_from_backup: Option<String>,
}

impl Observed {
    pub fn report_of(&self, id: u64) -> Option<&MemberReport> {
        let ordinal = crate::naming::ordinal_of(id)?;
        self.reports.get(&ordinal).filter(|r| r.id == id)
    }
}
