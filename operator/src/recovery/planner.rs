//! The solo-recovery planner: from the request in the spec, the recovery's
//! recorded progress (`status.recovery`) and what the members report, the
//! single next recovery step. Pure, like the membership planner, and with the
//! same crash rule: each step is recorded in status after it is taken, and a
//! step repeated after a crash is harmless.
//!
//! Order, and why:
//!
//! 1. **Prove quorum is lost**, from the members' own words: nobody reports
//!    being (or hearing from) a leader, every reachable member with data has
//!    heard from no leader for at least the threshold (`millis_since_leader`),
//!    and the reachable
//!    members with data are fewer than a majority of the voters last seen, and
//!    Kubernetes, too, sees every other voter's pod gone, or not Ready for as
//!    long as the threshold and at least [`KUBERNETES_DOWN_AFTER`] (the
//!    operator not reaching a member proves nothing alone: the operator may be
//!    the one cut off, with the majority healthy on the other side, and a
//!    majority that just lost its leader fails readiness for a few seconds). A
//!    leader present makes the request *refused* (final for this generation);
//!    anything short of proof makes it *wait* (it may become proof later).
//! 2. **Reset every other member first** (volume, then pod): the chosen member
//!    becomes the only one holding data. Deleting pods alone would let two old
//!    members restart with their data and re-form the old quorum next to the
//!    recovered one. A reset member comes back empty (`--join`, cluster id 0)
//!    and can only ever be added as a new member.
//! 3. **RecoverSolo** on the chosen member: it becomes a one-member cluster in
//!    a new epoch. A higher epoch in its report means this took effect (so a
//!    repeat after a crash is not sent).
//! 4. **Grow** through the membership planner (learner, then voter, one at a
//!    time) until `spec.replicas`; then the recovery is **Completed**.

use crate::crd::{RecoveryPhase, RecoveryStatus, SoloRecoverySpec};
use crate::membership::planner::quorum;
use crate::membership::{MemberReport, Observed, PodState};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What the recovery planner decides from.
#[derive(Debug, Clone)]
pub struct RecoveryInput<'a> {
    /// `spec.recovery.solo`.
    pub request: Option<&'a SoloRecoverySpec>,
    /// `metadata.generation`.
    pub generation: i64,
    /// `status.recovery`.
    pub status: Option<&'a RecoveryStatus>,
    pub observed: &'a Observed,
    /// Voter ids the operator last saw (from `status.members`); empty if none
    /// were recorded, and then every StatefulSet pod counts as a voter.
    pub known_voters: &'a [u64],
    /// No leader heard for at least this long counts as quorum lost.
    pub leaderless_threshold: Duration,
    /// The member pods as Kubernetes reports them, by ordinal (readiness
    /// from each node's kubelet, which the operator's network does not
    /// affect); a missing ordinal has no pod.
    pub pods: &'a BTreeMap<u32, PodState>,
}

/// One recovery step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryStep {
    /// Quorum loss proven: record the chosen member and its epoch.
    Begin { member: u32, from_epoch: u64 },
    /// Delete the volume, then the pod, of a member that is not the chosen one.
    ResetMember { ordinal: u32 },
    /// Delete the volume of an ordinal without a pod.
    DeleteVolume { ordinal: u32 },
    /// Admin.RecoverSolo on the chosen member.
    RecoverSolo { ordinal: u32 },
    /// Record the next phase; nothing to call.
    Enter(RecoveryPhase),
}

/// Why a request is refused: final for its generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryRefusal {
    /// A member leads: quorum is not lost.
    QuorumNotLost { leader_ordinal: u32 },
    /// The cluster was never initialized: nothing to recover.
    NotInitialized,
    /// `fromMember` is neither an ordinal nor `auto`.
    InvalidMember(String),
    /// The requested member answers but holds no data.
    MemberHasNoData { ordinal: u32 },
    /// The chosen member lost its data during recovery.
    ChosenLostData { ordinal: u32 },
}

/// Why recovery cannot proceed yet; re-checked on every reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryWait {
    /// No reachable member holds data.
    NoSurvivorReachable,
    /// This member heard from a leader too recently.
    LeaderSeenRecently { ordinal: u32, millis: u64 },
    /// Enough voters answer for a majority: an election should succeed.
    MajorityReachable { reachable: usize, voters: usize },
    /// The requested member does not answer.
    MemberUnreachable { ordinal: u32 },
    /// The chosen member's pod is not answering (restarting).
    PodStarting { ordinal: u32 },
    /// The operator cannot reach this voter, but Kubernetes reports its pod
    /// Ready: the operator may be the one partitioned away.
    UnreachableButReady { ordinal: u32 },
}

/// The recovery planner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryPlan {
    /// No recovery requested or in progress: the membership planner runs.
    Idle,
    /// Growing back: the membership planner runs; Completed once it converges.
    Growing,
    Act(RecoveryStep),
    Wait(RecoveryWait),
    Refuse(RecoveryRefusal),
}

/// The next recovery step; see the module docs.
pub fn plan_recovery(input: &RecoveryInput<'_>) -> RecoveryPlan {
    if let Some(status) = input.status {
        match status.phase {
            RecoveryPhase::ResettingOthers => return plan_resets(input, status),
            RecoveryPhase::RecoveringSolo => return plan_solo(input, status),
            RecoveryPhase::Growing => return RecoveryPlan::Growing,
            RecoveryPhase::Completed | RecoveryPhase::Refused
                if status.generation == input.generation =>
            {
                return RecoveryPlan::Idle
            }
            RecoveryPhase::Completed | RecoveryPhase::Refused => {}
        }
    }
    match input.request {
        Some(request) => plan_start(input, request),
        None => RecoveryPlan::Idle,
    }
}

/// How long Kubernetes must have reported a pod not Ready before solo
/// recovery counts its member lost (or the leaderless threshold, if longer):
/// a majority cut off from a leading member goes through an election, and
/// its pods fail readiness probes for a few seconds until it has a leader
/// again; that blip must never pass for a loss.
pub const KUBERNETES_DOWN_AFTER: Duration = Duration::from_secs(30);

/// Whether Kubernetes vouches that a pod is down: it has no pod, or its pod
/// has not been Ready for the leaderless threshold and at least
/// [`KUBERNETES_DOWN_AFTER`].
fn down_per_kubernetes(pod: Option<&PodState>, threshold: Duration) -> bool {
    pod.is_none_or(|pod| !pod.ready && pod.ready_for >= threshold.max(KUBERNETES_DOWN_AFTER))
}

/// Has data from some cluster (a `--join` member waiting to be added has none).
fn has_data(r: &MemberReport) -> bool {
    r.cluster_id != 0
}

fn plan_start(input: &RecoveryInput<'_>, request: &SoloRecoverySpec) -> RecoveryPlan {
    let o = input.observed;
    if !o.initialized {
        return RecoveryPlan::Refuse(RecoveryRefusal::NotInitialized);
    }
    let chosen = match parse_member(&request.from_member) {
        Ok(chosen) => chosen,
        Err(text) => return RecoveryPlan::Refuse(RecoveryRefusal::InvalidMember(text)),
    };
    let survivors: Vec<(u32, &MemberReport)> = o
        .reports
        .iter()
        .filter(|(_, r)| has_data(r))
        .map(|(&ord, r)| (ord, r))
        .collect();
    if survivors.is_empty() {
        return RecoveryPlan::Wait(RecoveryWait::NoSurvivorReachable);
    }
    let voters: BTreeSet<u64> = if input.known_voters.is_empty() {
        (0..o.statefulset_replicas.unwrap_or(0))
            .map(crate::naming::member_id)
            .collect()
    } else {
        input.known_voters.iter().copied().collect()
    };
    let reachable = survivors
        .iter()
        .filter(|(_, r)| voters.contains(&r.id))
        .count();
    let majority = reachable >= quorum(voters.len().max(1));
    // A live leader with a majority answering: quorum is not lost. Right after
    // a loss members still report the old leader until their leader timeout
    // passes; without a majority that proves nothing, and the leaderless
    // check below waits it out.
    if let Some((ordinal, r)) = survivors.iter().find(|(_, r)| r.leader != 0) {
        if majority {
            let leader_ordinal = crate::naming::ordinal_of(r.leader).unwrap_or(*ordinal);
            return RecoveryPlan::Refuse(RecoveryRefusal::QuorumNotLost { leader_ordinal });
        }
    }
    let threshold = input.leaderless_threshold.as_millis() as u64;
    if let Some((ordinal, r)) = survivors
        .iter()
        .find(|(_, r)| r.millis_since_leader < threshold)
    {
        return RecoveryPlan::Wait(RecoveryWait::LeaderSeenRecently {
            ordinal: *ordinal,
            millis: r.millis_since_leader,
        });
    }
    if majority {
        return RecoveryPlan::Wait(RecoveryWait::MajorityReachable {
            reachable,
            voters: voters.len(),
        });
    }
    let answered: BTreeSet<u64> = survivors.iter().map(|(_, r)| r.id).collect();
    if let Some(ordinal) = voters
        .iter()
        .filter(|id| !answered.contains(id))
        .filter_map(|&id| crate::naming::ordinal_of(id))
        .find(|ordinal| !down_per_kubernetes(input.pods.get(ordinal), input.leaderless_threshold))
    {
        return RecoveryPlan::Wait(RecoveryWait::UnreachableButReady { ordinal });
    }
    let member = match chosen {
        Some(ordinal) => match o.reports.get(&ordinal) {
            None => return RecoveryPlan::Wait(RecoveryWait::MemberUnreachable { ordinal }),
            Some(r) if !has_data(r) => {
                return RecoveryPlan::Refuse(RecoveryRefusal::MemberHasNoData { ordinal })
            }
            Some(_) => ordinal,
        },
        // Highest applied index; the lowest ordinal among equals.
        None => {
            survivors
                .iter()
                .max_by_key(|(ord, r)| (r.applied_index, std::cmp::Reverse(*ord)))
                .expect("survivors is not empty")
                .0
        }
    };
    RecoveryPlan::Act(RecoveryStep::Begin {
        member,
        from_epoch: o.reports[&member].epoch,
    })
}

/// `fromMember`: `Some(ordinal)`, or `None` for `auto`.
pub fn parse_member(from: &IntOrString) -> Result<Option<u32>, String> {
    let max = crate::crd::MAX_REPLICAS as u32;
    let ordinal = match from {
        IntOrString::String(s) if s.trim().eq_ignore_ascii_case("auto") => return Ok(None),
        IntOrString::String(s) => s.trim().parse::<u32>().ok(),
        IntOrString::Int(i) => u32::try_from(*i).ok(),
    };
    match ordinal {
        Some(ord) if ord < max => Ok(Some(ord)),
        _ => Err(format!(
            "fromMember {from:?} must be \"auto\" or a pod ordinal 0..{}",
            max - 1
        )),
    }
}

fn plan_resets(input: &RecoveryInput<'_>, status: &RecoveryStatus) -> RecoveryPlan {
    let o = input.observed;
    let Some(chosen) = status.member else {
        return RecoveryPlan::Act(RecoveryStep::Enter(RecoveryPhase::Refused));
    };
    let sts = o.statefulset_replicas.unwrap_or(0);
    let ordinals: BTreeSet<u32> = (0..sts)
        .chain(o.volumes.iter().copied())
        .chain(o.reports.keys().copied())
        .filter(|&ord| ord != chosen && !status.reset.contains(&ord))
        .collect();
    match ordinals.into_iter().next() {
        Some(ordinal) if ordinal < sts => RecoveryPlan::Act(RecoveryStep::ResetMember { ordinal }),
        Some(ordinal) => RecoveryPlan::Act(RecoveryStep::DeleteVolume { ordinal }),
        None => RecoveryPlan::Act(RecoveryStep::Enter(RecoveryPhase::RecoveringSolo)),
    }
}

fn plan_solo(input: &RecoveryInput<'_>, status: &RecoveryStatus) -> RecoveryPlan {
    let o = input.observed;
    let Some(chosen) = status.member else {
        return RecoveryPlan::Act(RecoveryStep::Enter(RecoveryPhase::Refused));
    };
    // A reset that did not take (the old volume came back): reset it again
    // before the chosen member starts serving alone.
    if let Some((&ordinal, _)) = o
        .reports
        .iter()
        .find(|(&ord, r)| ord != chosen && has_data(r) && r.epoch <= status.from_epoch)
    {
        return RecoveryPlan::Act(RecoveryStep::ResetMember { ordinal });
    }
    match o.reports.get(&chosen) {
        None => RecoveryPlan::Wait(RecoveryWait::PodStarting { ordinal: chosen }),
        Some(r) if r.epoch > status.from_epoch && has_data(r) => {
            RecoveryPlan::Act(RecoveryStep::Enter(RecoveryPhase::Growing))
        }
        Some(r) if !has_data(r) => {
            RecoveryPlan::Refuse(RecoveryRefusal::ChosenLostData { ordinal: chosen })
        }
        Some(_) => RecoveryPlan::Act(RecoveryStep::RecoverSolo { ordinal: chosen }),
    }
}
