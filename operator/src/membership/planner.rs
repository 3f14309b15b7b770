//! The membership planner: given what was observed, the single next step that
//! moves the cluster toward `spec.replicas`, or why none is taken.
//!
//! It is a pure function ([`plan_next_step`]) so every situation, including
//! "the operator crashed between two steps", is a table row in a test. It keeps
//! no memory between calls: the only history it sees is what the cluster itself
//! shows (membership, pods, volumes) plus the `initialized` flag in status. So
//! re-running it after a crash picks up where the last run stopped, and a step
//! repeated after a crash is one the nodes treat as already done.
//!
//! Rules, in the order they are checked:
//!
//! 1. Member 1 (pod 0) is initialized exactly once, through Admin.Initialize,
//!    and only while status says no initialization happened. Initialize is
//!    idempotent for the same token, so a crash before status was written is safe.
//! 2. At most one membership change at a time: while a learner exists, nothing
//!    else is added; it is promoted once caught up (or removed if the spec no
//!    longer wants it). A learner that never catches up is reported, not removed.
//! 3. Shrinking removes the highest member from Raft *before* its pod goes, and
//!    only when every remaining voter is ready and the current voters have a
//!    quorum. Leadership transfer is left to the node: removing the leader makes
//!    it hand over to the most up-to-date voter first, inside one Raft change.
//!    An explicit MoveLeader would be one more step that an election can undo.
//! 4. Stale data never rejoins: a volume left for an ordinal without a pod is
//!    deleted before that ordinal's pod is created again, and a pod that reports
//!    any cluster id while not being a member is reset (volume and pod deleted)
//!    instead of added. Only empty members are added.
//! 5. A voter whose pod reports no cluster lost its volume: it is removed
//!    (under rule 3's safety checks) and its empty pod added again by growth,
//!    since the node refuses an empty data dir under a member's old id.
//! 6. The operator owns the StatefulSet's replicas: a member whose pod it
//!    does not run gets its pod back, and so, while no leader answers, does
//!    any volume beyond its pods (an outside `kubectl scale` that took the
//!    quorum away). Volumes are deleted by rule 4 only, never by the
//!    StatefulSet's retention policy.

use super::observed::{MemberReport, Observed, RaftMember, Role};
use crate::naming::{member_id, ordinal_of};
use std::time::Duration;

/// After this long without catching up, a learner is reported as stalled.
pub const LEARNER_STALL_AFTER: Duration = Duration::from_secs(10 * 60);

/// Largest ordinal the operator manages (9 members).
const MAX_ORDINAL: u32 = crate::crd::MAX_REPLICAS as u32 - 1;

/// One thing to do, to Kubernetes or to the Raft membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Set the StatefulSet's replicas (always one up or one down).
    ScaleStatefulSet { from: u32, to: u32 },
    /// Admin.Initialize on pod 0: member 1 becomes a one-member cluster.
    Initialize,
    /// Admin.AddMember(id, peer URL of `ordinal`, learner).
    AddLearner { id: u64, ordinal: u32 },
    /// etcd MemberPromote.
    Promote { id: u64 },
    /// etcd MemberRemove.
    RemoveMember { id: u64 },
    /// Delete the data volume of an ordinal that has no pod.
    DeleteVolume { ordinal: u32 },
    /// Delete the volume and the pod of a non-member that carries old data, so
    /// it comes back empty.
    ResetMember { ordinal: u32 },
}

impl Step {
    /// Raft membership steps go to the members (the executor); the others to
    /// Kubernetes (the controller).
    pub fn is_raft_step(&self) -> bool {
        matches!(
            self,
            Step::Initialize
                | Step::AddLearner { .. }
                | Step::Promote { .. }
                | Step::RemoveMember { .. }
        )
    }
}

/// Why nothing is done right now, though the cluster has not converged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// The pod of this ordinal is not answering yet.
    PodStarting { ordinal: u32 },
    /// No leader answered (electing, or every pod restarting).
    NoLeader,
    /// A learner is replicating the log. `stalled` once it has taken longer
    /// than [`LEARNER_STALL_AFTER`].
    LearnerCatchingUp { id: u64, stalled: bool },
}

/// A step is needed but refused, because taking it could lose data or quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Removing a member now could cost quorum: these voters are not ready.
    UnhealthyRefusingToShrink { not_ready: Vec<u64> },
    /// Promoting now would leave the bigger voter set without a ready quorum.
    PromotionWouldLoseQuorum { id: u64 },
    /// A member id the operator did not create (not ordinal + 1 of one of its pods).
    ForeignMember { id: u64 },
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Act(Step),
    Wait(Wait),
    Refuse(Refusal),
    /// Membership, StatefulSet and volumes all match the spec.
    Converged,
}

/// Votes needed among `voters`.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// The single next step; see the module docs for the rules.
pub fn plan_next_step(o: &Observed) -> Plan {
    let desired = o.desired_replicas.clamp(1, MAX_ORDINAL + 1);
    let sts = o.statefulset_replicas.unwrap_or(0);

    if !o.initialized {
        return plan_bootstrap(o, sts);
    }
    let Some(membership) = o.membership.as_deref() else {
        // Rule 6: volumes beyond the StatefulSet's pods while no leader
        // answers: someone scaled it down from outside and took the quorum
        // with the pods. Give the pods back, one at a time, with their
        // volumes (kept: whenScaled is Retain); waiting for a leader would
        // wait for ever. A removed member's leftover volume brought back so
        // exits as removed, and rule 4 deletes it once a leader answers.
        if sts <= MAX_ORDINAL && o.volumes.iter().any(|&ordinal| ordinal >= sts) {
            return Plan::Act(Step::ScaleStatefulSet {
                from: sts,
                to: sts + 1,
            });
        }
        return Plan::Wait(Wait::NoLeader);
    };
    if let Some(foreign) = membership
        .iter()
        .find(|m| ordinal_of(m.id).is_none_or(|ord| ord > MAX_ORDINAL))
    {
        return Plan::Refuse(Refusal::ForeignMember { id: foreign.id });
    }
    let is_member = |ordinal: u32| membership.iter().any(|m| m.id == member_id(ordinal));

    // A member whose pod the StatefulSet does not run: give it its pod back.
    let highest_member_ordinal = membership.iter().filter_map(|m| ordinal_of(m.id)).max();
    if let Some(highest) = highest_member_ordinal {
        if highest >= sts {
            return Plan::Act(Step::ScaleStatefulSet {
                from: sts,
                to: sts + 1,
            });
        }
    }

    // A volume without a pod and without a member: a removed member's leftovers.
    if let Some(&ordinal) = o
        .volumes
        .iter()
        .rev()
        .find(|&&ord| ord >= sts && !is_member(ord))
    {
        return Plan::Act(Step::DeleteVolume { ordinal });
    }

    let leader = leader_report(o, membership);

    if let Some(learner) = membership
        .iter()
        .filter(|m| m.is_learner)
        .max_by_key(|m| m.id)
    {
        return plan_learner(o, membership, learner, leader, desired);
    }

    let voters: Vec<u64> = membership.iter().map(|m| m.id).collect();

    // Rule 5: a voter whose pod reports no cluster lost its volume. The node
    // refuses that pod as the member (its data dir is not the one the
    // cluster recorded), so the member leaves, when that is safe, and growth
    // adds the empty pod again.
    if let Some(lost) = voters
        .iter()
        .copied()
        .find(|&id| o.report_of(id).is_some_and(MemberReport::is_empty))
    {
        return plan_removal(o, &voters, lost, leader);
    }

    // Finish retiring a removed member (its pod, then its volume) before the next removal.
    if sts > desired && !is_member(sts - 1) {
        return Plan::Act(Step::ScaleStatefulSet {
            from: sts,
            to: sts - 1,
        });
    }

    if let Some(&extra) = voters
        .iter()
        .filter(|&&id| ordinal_of(id).is_some_and(|ord| ord >= desired))
        .max()
    {
        return plan_removal(o, &voters, extra, leader);
    }

    if let Some(missing) = (0..desired).find(|&ord| !is_member(ord)) {
        return plan_growth(o, missing, sts, leader);
    }
    Plan::Converged
}

/// Rule 1: bring pod 0 up and initialize it.
fn plan_bootstrap(o: &Observed, sts: u32) -> Plan {
    if sts == 0 {
        return Plan::Act(Step::ScaleStatefulSet { from: 0, to: 1 });
    }
    match o.reports.get(&0) {
        // Initialize even if pod 0 reports a cluster id: with our token it is a
        // no-op (we crashed before recording it); with another cluster's data
        // the node refuses loudly, which is what must happen.
        Some(_) => Plan::Act(Step::Initialize),
        None => Plan::Wait(Wait::PodStarting { ordinal: 0 }),
    }
}

/// The leader's own report, if a member says it leads and is a voter.
fn leader_report<'a>(o: &'a Observed, membership: &[RaftMember]) -> Option<&'a MemberReport> {
    o.reports.values().find(|r| {
        r.role == Role::Leader && membership.iter().any(|m| m.id == r.id && !m.is_learner)
    })
}

fn is_voter_ready(o: &Observed, id: u64) -> bool {
    o.report_of(id)
        .is_some_and(|r| r.is_ready() && r.leader != 0)
}

/// Rule 2: one learner at a time, promoted when caught up.
fn plan_learner(
    o: &Observed,
    membership: &[RaftMember],
    learner: &RaftMember,
    leader: Option<&MemberReport>,
    desired: u32,
) -> Plan {
    let ordinal = ordinal_of(learner.id).expect("foreign ids were refused");
    if ordinal >= desired {
        // No longer wanted (the spec shrank mid-growth). A learner has no vote,
        // so removing it never touches quorum.
        return Plan::Act(Step::RemoveMember { id: learner.id });
    }
    let stalled = o
        .learner_waiting_for
        .is_some_and(|waited| waited >= LEARNER_STALL_AFTER);
    let Some(report) = o.reports.get(&ordinal) else {
        return if stalled {
            Plan::Wait(Wait::LearnerCatchingUp {
                id: learner.id,
                stalled,
            })
        } else {
            Plan::Wait(Wait::PodStarting { ordinal })
        };
    };
    let Some(leader) = leader else {
        return Plan::Wait(Wait::NoLeader);
    };
    if !is_caught_up(report, leader) {
        return Plan::Wait(Wait::LearnerCatchingUp {
            id: learner.id,
            stalled,
        });
    }
    let voters: Vec<u64> = membership
        .iter()
        .filter(|m| !m.is_learner)
        .map(|m| m.id)
        .collect();
    let ready_after = voters.iter().filter(|&&id| is_voter_ready(o, id)).count() + 1;
    if ready_after < quorum(voters.len() + 1) {
        return Plan::Refuse(Refusal::PromotionWouldLoseQuorum { id: learner.id });
    }
    Plan::Act(Step::Promote { id: learner.id })
}

/// The node promotes a learner once it holds 90% of the leader's log; ask only
/// then, and only once the learner itself says it is ready.
fn is_caught_up(learner: &MemberReport, leader: &MemberReport) -> bool {
    learner.id != leader.id
        && !learner.is_empty()
        && learner.leader == leader.id
        && learner.applied_index.saturating_mul(10) >= leader.last_log_index.saturating_mul(9)
}

/// Rule 3: remove the highest unwanted voter, only when that is safe.
fn plan_removal(o: &Observed, voters: &[u64], id: u64, leader: Option<&MemberReport>) -> Plan {
    if leader.is_none() {
        return Plan::Refuse(Refusal::UnhealthyRefusingToShrink {
            not_ready: voters
                .iter()
                .copied()
                .filter(|&v| !is_voter_ready(o, v))
                .collect(),
        });
    }
    let not_ready: Vec<u64> = voters
        .iter()
        .copied()
        .filter(|&v| !is_voter_ready(o, v))
        .collect();
    let remaining_not_ready = not_ready.iter().any(|&v| v != id);
    let ready_now = voters.len() - not_ready.len();
    if remaining_not_ready || ready_now < quorum(voters.len()) {
        return Plan::Refuse(Refusal::UnhealthyRefusingToShrink { not_ready });
    }
    Plan::Act(Step::RemoveMember { id })
}

/// Rule 4 and growth: bring up the pod for `ordinal` from an empty volume, then add it.
fn plan_growth(o: &Observed, ordinal: u32, sts: u32, leader: Option<&MemberReport>) -> Plan {
    if ordinal >= sts {
        // Any volume left at `sts` was deleted by the orphaned-volume rule above,
        // so the new pod starts empty.
        return Plan::Act(Step::ScaleStatefulSet {
            from: sts,
            to: sts + 1,
        });
    }
    let Some(report) = o.reports.get(&ordinal) else {
        return Plan::Wait(Wait::PodStarting { ordinal });
    };
    if !report.is_empty() {
        return Plan::Act(Step::ResetMember { ordinal });
    }
    if leader.is_none() {
        return Plan::Wait(Wait::NoLeader);
    }
    Plan::Act(Step::AddLearner {
        id: member_id(ordinal),
        ordinal,
    })
}
