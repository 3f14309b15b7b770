//! Solo recovery of a RaftCluster that lost quorum: deciding the next step
//! ([`planner`], pure), the one member call it needs ([`executor`]), and how
//! each step is recorded in `status.recovery` (here) so that an operator
//! restart resumes it instead of starting over.

pub mod executor;
pub mod planner;

pub use planner::{
    plan_recovery, RecoveryInput, RecoveryPlan, RecoveryRefusal, RecoveryStep, RecoveryWait,
    KUBERNETES_DOWN_AFTER,
};

use crate::crd::{RecoveryPhase, RecoveryStatus};

/// The condition type reporting solo recovery.
pub const CONDITION: &str = "SoloRecovery";

/// `status.recovery` after `plan` was carried out successfully (`detail`:
/// what the member said, for RecoverSolo). Waiting changes nothing.
pub fn record(
    previous: Option<&RecoveryStatus>,
    generation: i64,
    plan: &RecoveryPlan,
    detail: Option<String>,
    now: &str,
) -> Option<RecoveryStatus> {
    let enter = |phase: RecoveryPhase, reason: &str, message: String| {
        previous.map(|p| RecoveryStatus {
            phase,
            reason: reason.to_string(),
            message,
            since: now.to_string(),
            ..p.clone()
        })
    };
    match plan {
        RecoveryPlan::Idle | RecoveryPlan::Growing | RecoveryPlan::Wait(_) => previous.cloned(),
        RecoveryPlan::Refuse(refusal) => Some(RecoveryStatus {
            // A refusal in the middle of a recovery belongs to that recovery.
            generation: previous
                .filter(|p| in_progress(p.phase))
                .map_or(generation, |p| p.generation),
            phase: RecoveryPhase::Refused,
            member: previous.and_then(|p| p.member),
            from_epoch: previous.map_or(0, |p| p.from_epoch),
            reset: previous.map(|p| p.reset.clone()).unwrap_or_default(),
            reason: refusal_reason(refusal).to_string(),
            message: describe_refusal(refusal),
            since: now.to_string(),
        }),
        RecoveryPlan::Act(RecoveryStep::Begin { member, from_epoch }) => Some(RecoveryStatus {
            generation,
            phase: RecoveryPhase::ResettingOthers,
            member: Some(*member),
            from_epoch: *from_epoch,
            reset: Vec::new(),
            reason: "QuorumLost".to_string(),
            message: format!(
                "quorum lost; member of pod ordinal {member} keeps its data, the others are reset"
            ),
            since: now.to_string(),
        }),
        RecoveryPlan::Act(RecoveryStep::ResetMember { ordinal })
        | RecoveryPlan::Act(RecoveryStep::DeleteVolume { ordinal }) => previous.map(|p| {
            let mut next = p.clone();
            if p.phase == RecoveryPhase::ResettingOthers && !next.reset.contains(ordinal) {
                next.reset.push(*ordinal);
            }
            next
        }),
        RecoveryPlan::Act(RecoveryStep::RecoverSolo { .. }) => enter(
            RecoveryPhase::Growing,
            "Growing",
            detail.unwrap_or_else(|| "recovered as a one-member cluster".to_string()),
        ),
        RecoveryPlan::Act(RecoveryStep::Enter(phase)) => {
            let message = match phase {
                RecoveryPhase::Completed => "back to spec.replicas members".to_string(),
                _ => previous.map(|p| p.message.clone()).unwrap_or_default(),
            };
            enter(*phase, phase_reason(*phase), message)
        }
    }
}

/// The recovery is between its first and last step: it resumes whatever the spec says.
pub fn in_progress(phase: RecoveryPhase) -> bool {
    matches!(
        phase,
        RecoveryPhase::ResettingOthers | RecoveryPhase::RecoveringSolo | RecoveryPhase::Growing
    )
}

fn phase_reason(phase: RecoveryPhase) -> &'static str {
    match phase {
        RecoveryPhase::ResettingOthers => "ResettingOthers",
        RecoveryPhase::RecoveringSolo => "RecoveringSolo",
        RecoveryPhase::Growing => "Growing",
        RecoveryPhase::Completed => "Completed",
        RecoveryPhase::Refused => "Refused",
    }
}

pub fn refusal_reason(refusal: &RecoveryRefusal) -> &'static str {
    match refusal {
        RecoveryRefusal::QuorumNotLost { .. } => "QuorumNotLost",
        RecoveryRefusal::NotInitialized => "NotInitialized",
        RecoveryRefusal::InvalidMember(_) => "InvalidMember",
        RecoveryRefusal::MemberHasNoData { .. } => "MemberHasNoData",
        RecoveryRefusal::ChosenLostData { .. } => "ChosenMemberLostData",
    }
}

pub fn describe_refusal(refusal: &RecoveryRefusal) -> String {
    match refusal {
        RecoveryRefusal::QuorumNotLost { leader_ordinal } => format!(
            "quorum is not lost: pod ordinal {leader_ordinal} leads; solo recovery would throw \
             away the other members' data. Remove spec.recovery (edit it again to retry)"
        ),
        RecoveryRefusal::NotInitialized => {
            "the cluster was never initialized: there is nothing to recover".to_string()
        }
        RecoveryRefusal::InvalidMember(why) => why.clone(),
        RecoveryRefusal::MemberHasNoData { ordinal } => format!(
            "pod ordinal {ordinal} answers but holds no data; choose another member or \"auto\""
        ),
        RecoveryRefusal::ChosenLostData { ordinal } => format!(
            "pod ordinal {ordinal}, the member chosen to keep its data, came back empty; \
             restore from a backup (spec.restore) into a new RaftCluster"
        ),
    }
}

/// The condition reason and message while recovery waits for proof or a pod.
pub fn describe_wait(wait: &RecoveryWait) -> (&'static str, String) {
    match wait {
        RecoveryWait::NoSurvivorReachable => (
            "NoSurvivorReachable",
            "no reachable member holds data; waiting for one to answer".to_string(),
        ),
        // No running count in the message: a message that changes on every
        // reconcile is a status write, a watch event and another reconcile,
        // a loop a few hundred milliseconds long for as long as this waits.
        RecoveryWait::LeaderSeenRecently { ordinal, .. } => (
            "QuorumLossNotProven",
            format!(
                "pod ordinal {ordinal} heard from a leader less than \
                 spec.recovery.leaderlessSeconds ago"
            ),
        ),
        RecoveryWait::MajorityReachable { reachable, voters } => (
            "QuorumLossNotProven",
            format!(
                "{reachable} of {voters} voters answer with their data: a majority, so an \
                 election can still succeed"
            ),
        ),
        RecoveryWait::MemberUnreachable { ordinal } => (
            "MemberUnreachable",
            format!("pod ordinal {ordinal}, the requested member, does not answer"),
        ),
        RecoveryWait::PodStarting { ordinal } => (
            "WaitingForPod",
            format!("pod ordinal {ordinal} is not answering yet"),
        ),
        RecoveryWait::UnreachableButReady { ordinal } => (
            "UnreachableButReady",
            format!(
                "the operator cannot reach pod ordinal {ordinal}, but Kubernetes does not \
                 report it down (its pod is Ready, or not Ready for less than \
                 spec.recovery.leaderlessSeconds or 30 s): the operator may be the one cut \
                 off, so it is not counted lost"
            ),
        ),
    }
}

/// The SoloRecovery condition (status, reason, message), or `None` when there
/// is nothing to report (no request and no recovery on record).
pub fn condition(
    requested: bool,
    status: Option<&RecoveryStatus>,
    plan: &RecoveryPlan,
) -> Option<(bool, String, String)> {
    if let RecoveryPlan::Wait(wait) = plan {
        let (reason, message) = describe_wait(wait);
        let under_way = status.is_some_and(|s| in_progress(s.phase));
        return Some((under_way, reason.to_string(), message));
    }
    let status = status?;
    if !requested && !in_progress(status.phase) && status.phase != RecoveryPhase::Completed {
        return None;
    }
    let ok = status.phase != RecoveryPhase::Refused;
    Some((ok, status.reason.clone(), status.message.clone()))
}
