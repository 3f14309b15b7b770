//! The RaftCluster status the operator writes after each reconcile, computed
//! purely from what was observed and what the planner answered.
//!
//! Conditions follow Kubernetes conventions: `Available` (a ready quorum
//! serves), `Progressing` (a change is under way), `Degraded` (something needs
//! attention: a member not ready, a refused step, a stalled learner, a failed
//! call), plus `ReplicaCountWarning` for an even member count. A condition's
//! `lastTransitionTime` moves only when its status flips.
//!
//! `ReconcileFailed` is different: a reconcile that fails before it can compute
//! a status (the API server refused a call, e.g. RBAC took a verb away) adds it
//! to the conditions already there ([`with_reconcile_failure`]), and the next
//! status a successful reconcile writes no longer has it.

use crate::crd::{
    LastSnapshot, MaintenanceStatus, MemberSummary, PendingLearner, Phase, RaftCluster,
    RaftClusterStatus, RecoveryStatus,
};
use crate::membership::planner::quorum;
use crate::membership::{Observed, Plan, Refusal, Role, Step, Wait};
use crate::naming::{ordinal_of, ClusterNames};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Everything status is computed from.
pub struct StatusInput<'a> {
    pub rc: &'a RaftCluster,
    pub names: &'a ClusterNames,
    pub observed: &'a Observed,
    pub plan: &'a Plan,
    /// The step taken this round failed with this message.
    pub step_error: Option<String>,
    /// Set when this round initialized the cluster (ids are recorded in hex).
    pub initialized_cluster_id: Option<u64>,
    pub now: Timestamp,
    /// `status.recovery` as the recovery round left it.
    pub recovery: Option<RecoveryStatus>,
    /// `status.lastSnapshot` as the backup round left it.
    pub last_snapshot: Option<LastSnapshot>,
    /// `status.maintenance` as the maintenance round left it.
    pub maintenance: Option<MaintenanceStatus>,
    /// Conditions of the backup and recovery features.
    pub extra_conditions: Vec<ExtraCondition>,
}

/// A feature's condition: set now, kept as it was, or dropped.
pub struct ExtraCondition {
    pub type_: &'static str,
    /// The feature is in use: without a new value, the previous condition stays.
    pub configured: bool,
    /// (status, reason, message) to set now.
    pub set: Option<(bool, String, String)>,
}

/// The new status.
pub fn build_status(input: &StatusInput<'_>) -> RaftClusterStatus {
    let previous = input.rc.status.clone().unwrap_or_default();
    let census = Census::of(input.observed);
    let initialized = initialized(input, &previous);
    let degraded = degraded(input, &census);
    let progressing = progressing(input.plan);
    let phase = phase(input, initialized.is_some(), degraded.0, progressing.0);
    RaftClusterStatus {
        phase: Some(phase),
        replicas: input.observed.statefulset_replicas.unwrap_or(0) as i32,
        ready_replicas: census.ready_voters as i32,
        voters: census.voters.len() as i32,
        learners: census.learners as i32,
        leader: census
            .leader
            .and_then(ordinal_of)
            .map(|ord| input.names.pod(ord)),
        members: members(input, &previous),
        conditions: conditions(input, &previous, &census, degraded, progressing),
        observed_generation: input.rc.metadata.generation,
        selector: Some(input.names.selector_string()),
        initialized,
        pending_learner: pending_learner(input, &previous),
        last_snapshot: input.last_snapshot.clone(),
        recovery: input.recovery.clone(),
        maintenance: input.maintenance.clone(),
    }
}

/// Who is in the membership and who of them is ready and leads.
struct Census {
    voters: Vec<u64>,
    learners: usize,
    ready_voters: usize,
    /// A voter that reports itself leader.
    leader: Option<u64>,
}

impl Census {
    fn of(o: &Observed) -> Self {
        let membership = o.membership.as_deref().unwrap_or_default();
        let voters: Vec<u64> = membership
            .iter()
            .filter(|m| !m.is_learner)
            .map(|m| m.id)
            .collect();
        let ready_voters = voters
            .iter()
            .filter(|&&id| o.report_of(id).is_some_and(|r| r.is_ready()))
            .count();
        let leader = o
            .reports
            .values()
            .find(|r| r.role == Role::Leader && voters.contains(&r.id))
            .map(|r| r.id);
        Census {
            learners: membership.len() - voters.len(),
            voters,
            ready_voters,
            leader,
        }
    }

    /// A leader among the voters and a ready quorum of them.
    fn available(&self) -> bool {
        self.leader.is_some()
            && !self.voters.is_empty()
            && self.ready_voters >= quorum(self.voters.len())
    }
}

/// One summary per member of the membership, named by its pod. While no
/// leader answers, the members as last seen through one: solo recovery
/// counts the voters of that list (`recovery::known_voters`).
fn members(input: &StatusInput<'_>, previous: &RaftClusterStatus) -> Vec<MemberSummary> {
    let o = input.observed;
    let Some(membership) = o.membership.as_deref() else {
        return previous.members.clone();
    };
    membership
        .iter()
        .map(|m| {
            let report = o.report_of(m.id);
            MemberSummary {
                id: m.id,
                name: ordinal_of(m.id)
                    .map(|ord| input.names.pod(ord))
                    .unwrap_or_default(),
                role: report
                    .map_or("unreachable", |r| r.role.as_str())
                    .to_string(),
                caught_up: report.is_some_and(|r| r.is_ready()),
            }
        })
        .collect()
}

/// The record of the cluster's initialization: kept once written, written
/// the round that initialized it.
fn initialized(
    input: &StatusInput<'_>,
    previous: &RaftClusterStatus,
) -> Option<crate::crd::InitializedRecord> {
    match (input.initialized_cluster_id, previous.initialized.clone()) {
        (_, Some(done)) => Some(done),
        (Some(id), None) => Some(crate::crd::InitializedRecord {
            cluster_id: format!("{id:x}"),
            cluster_token: input.rc.metadata.uid.clone().unwrap_or_default(),
            restored_from: input
                .rc
                .spec
                .restore
                .as_ref()
                .map(|r| r.from_backup.clone()),
        }),
        (None, None) => None,
    }
}

/// The learner in the membership, and since when (kept from the previous
/// status while it is the same learner).
fn pending_learner(
    input: &StatusInput<'_>,
    previous: &RaftClusterStatus,
) -> Option<PendingLearner> {
    let membership = input.observed.membership.as_deref().unwrap_or_default();
    membership.iter().find(|m| m.is_learner).map(|l| {
        match previous.pending_learner.as_ref().filter(|p| p.id == l.id) {
            Some(p) => p.clone(),
            None => PendingLearner {
                id: l.id,
                since: input.now.to_string(),
            },
        }
    })
}

fn phase(input: &StatusInput<'_>, initialized: bool, degraded: bool, progressing: bool) -> Phase {
    let recovering = input
        .recovery
        .as_ref()
        .is_some_and(|r| crate::recovery::in_progress(r.phase));
    if recovering {
        Phase::Recovering
    } else if !initialized {
        if input.observed.reports.contains_key(&0) {
            Phase::Initializing
        } else {
            Phase::Pending
        }
    } else if degraded {
        Phase::Degraded
    } else if progressing {
        Phase::Scaling
    } else {
        Phase::Running
    }
}

/// A condition's (status, reason, message).
type Verdict = (bool, &'static str, String);

/// Available, Progressing, Degraded, ReplicaCountWarning, then the features'
/// conditions, each keeping its transition time while its status holds.
fn conditions(
    input: &StatusInput<'_>,
    previous: &RaftClusterStatus,
    census: &Census,
    (degraded, degraded_reason, degraded_message): Verdict,
    (progressing, progressing_reason, progressing_message): Verdict,
) -> Vec<Condition> {
    let generation = input.rc.metadata.generation;
    let mut conditions = Vec::new();
    let mut set = |type_: &str, status: bool, reason: &str, message: String| {
        conditions.push(condition(
            &previous.conditions,
            type_,
            status,
            reason,
            message,
            generation,
            input.now,
        ));
    };
    let available = census.available();
    set(
        "Available",
        available,
        if available {
            "QuorumReady"
        } else {
            "NoReadyQuorum"
        },
        format!(
            "{} of {} voters ready",
            census.ready_voters,
            census.voters.len()
        ),
    );
    set(
        "Progressing",
        progressing,
        progressing_reason,
        progressing_message,
    );
    set("Degraded", degraded, degraded_reason, degraded_message);
    let replicas = input.rc.spec.replicas;
    let even = replicas % 2 == 0;
    set(
        "ReplicaCountWarning",
        even,
        if even { "EvenReplicas" } else { "OddReplicas" },
        if even {
            format!(
                "{replicas} members tolerate as many failures as {}; an odd count is recommended",
                replicas - 1
            )
        } else {
            String::new()
        },
    );
    for extra in &input.extra_conditions {
        match &extra.set {
            Some((status, reason, message)) => {
                set(extra.type_, *status, reason, message.clone());
            }
            None if extra.configured => {
                if let Some(kept) = previous.conditions.iter().find(|c| c.type_ == extra.type_) {
                    set(
                        extra.type_,
                        kept.status == "True",
                        &kept.reason,
                        kept.message.clone(),
                    );
                }
            }
            None => {}
        }
    }
    conditions
}

fn degraded(input: &StatusInput<'_>, census: &Census) -> Verdict {
    let stalled = matches!(
        input.plan,
        Plan::Wait(Wait::LearnerCatchingUp { stalled: true, .. })
    );
    let (voters, ready_voters) = (census.voters.len(), census.ready_voters);
    if let Some(err) = &input.step_error {
        return (true, "StepFailed", err.clone());
    }
    match input.plan {
        Plan::Refuse(Refusal::UnhealthyRefusingToShrink { not_ready }) => (
            true,
            "ShrinkRefusedUnhealthy",
            format!("not removing a member while voters {not_ready:?} are not ready"),
        ),
        Plan::Refuse(Refusal::PromotionWouldLoseQuorum { id }) => (
            true,
            "PromotionRefused",
            format!("promoting member {id} now would leave no ready quorum"),
        ),
        Plan::Refuse(Refusal::ForeignMember { id }) => (
            true,
            "ForeignMember",
            format!("member {id:x} was not added by the operator; remove it by hand"),
        ),
        _ if stalled => (
            true,
            "LearnerNotCatchingUp",
            "the learner has not caught up with the leader; it is kept, not removed".to_string(),
        ),
        _ if ready_voters < voters => (
            true,
            "MemberNotReady",
            format!("{} of {voters} voters not ready", voters - ready_voters),
        ),
        _ => (false, "AllMembersReady", String::new()),
    }
}

fn progressing(plan: &Plan) -> Verdict {
    match plan {
        Plan::Converged => (
            false,
            "Converged",
            "membership matches spec.replicas".to_string(),
        ),
        Plan::Act(step) => (true, step_reason(step), format!("{step:?}")),
        Plan::Wait(Wait::PodStarting { ordinal }) => (
            true,
            "WaitingForPod",
            format!("pod ordinal {ordinal} is not answering yet"),
        ),
        Plan::Wait(Wait::NoLeader) => (true, "WaitingForLeader", "no leader answered".to_string()),
        Plan::Wait(Wait::LearnerCatchingUp { id, .. }) => (
            true,
            "LearnerCatchingUp",
            format!("member {id} is replicating the log"),
        ),
        Plan::Refuse(_) => (true, "Blocked", "see the Degraded condition".to_string()),
    }
}

/// The event and condition reason of a step.
pub fn step_reason(step: &Step) -> &'static str {
    match step {
        Step::ScaleStatefulSet { from, to } if to > from => "ScalingUp",
        Step::ScaleStatefulSet { .. } => "ScalingDown",
        Step::Initialize => "Initializing",
        Step::AddLearner { .. } => "AddingLearner",
        Step::Promote { .. } => "PromotingLearner",
        Step::RemoveMember { .. } => "RemovingMember",
        Step::DeleteVolume { .. } => "DeletingVolume",
        Step::ResetMember { .. } => "ResettingStaleMember",
    }
}

/// The condition type a failed reconcile adds (see the module doc).
pub const RECONCILE_FAILED: &str = "ReconcileFailed";

/// `previous` with a `ReconcileFailed=True` condition (replacing an older
/// one): `reason` is the API server's (e.g. `Forbidden`), `message` says which
/// call failed and why.
pub fn with_reconcile_failure(
    previous: &[Condition],
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let failed = condition(
        previous,
        RECONCILE_FAILED,
        true,
        reason,
        message,
        generation,
        now,
    );
    previous
        .iter()
        .filter(|c| c.type_ != RECONCILE_FAILED)
        .cloned()
        .chain(std::iter::once(failed))
        .collect()
}

fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}
