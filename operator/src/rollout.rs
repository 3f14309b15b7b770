//! Rollouts: which member pod to restart next after the pod template changed
//! (a new image, resources, scheduling), or why none is restarted now. Pure,
//! like the other planners; the controller carries the step out
//! (`controller/rollout.rs`).
//!
//! Kubernetes' own rolling update restarts pods by ordinal as soon as the
//! previous one is Ready, blind to Raft: with one member already down, an
//! image change restarts a healthy one and the quorum is gone. So the
//! StatefulSet uses `OnDelete` (it re-creates a deleted pod from the current
//! template, nothing more) and the operator decides which pod to delete.
//! Rules, in the order they are checked:
//!
//! 1. Never while the membership changes (a step in flight, a learner
//!    catching up) or solo recovery holds the members: a restart then could
//!    take the one member the change needs.
//! 2. One pod at a time: while a pod is being deleted, missing, or back on
//!    the new template and not Ready yet (for up to [`START_GRACE`]), wait.
//! 3. Unhealthy pods first: a pod on the old template that has not been Ready
//!    for [`UNHEALTHY_AFTER`] serves nobody, so restarting it takes nothing
//!    away, whatever the others' state (and a new image may be its fix).
//! 4. A healthy pod is restarted only when every other voter's pod is Ready
//!    and its member reports ready, so the cluster keeps one failure's margin
//!    short of losing quorum at every moment, never less.
//! 5. The leader last, and never as leader: when only the leader's pod is
//!    left on the old template, leadership is moved (etcd MoveLeader) to a
//!    ready voter already on the new one; the next round restarts the pod.
//!    A one-member cluster has nobody to hand over to: it restarts.

use crate::membership::executor::current_leader;
pub use crate::membership::PodState;
use crate::membership::{Observed, Plan, Wait};
use crate::naming::{member_id, ordinal_of};
use std::collections::BTreeMap;
use std::time::Duration;

/// The condition type reporting rollouts.
pub const CONDITION: &str = "PodsUpToDate";

/// A pod back on the new template gets this long to become Ready before the
/// rollout stops waiting for it (it then waits only where rule 4 says so).
pub const START_GRACE: Duration = Duration::from_secs(120);

/// A pod not Ready for this long is unhealthy: restarting it costs nothing.
/// Longer than an election and a restart, so a blip never counts.
pub const UNHEALTHY_AFTER: Duration = Duration::from_secs(30);

/// What the rollout planner decides from.
#[derive(Debug, Clone)]
pub struct RolloutInput<'a> {
    /// The StatefulSet's `status.updateRevision`, once its controller has
    /// seen the current template (`None` before).
    pub update_revision: Option<&'a str>,
    /// The StatefulSet's replica count: pods 0..replicas should exist.
    pub replicas: u32,
    /// Member pods by ordinal.
    pub pods: BTreeMap<u32, PodState>,
    /// The members as observed for the membership planner.
    pub observed: &'a Observed,
    /// The membership planner's decision this round.
    pub membership: &'a Plan,
    /// Solo recovery owns the members this round.
    pub recovery_holds_members: bool,
}

/// Why a pod is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartReason {
    /// It has not been Ready for a while (rule 3).
    Unhealthy,
    /// Every other voter serves (rule 4).
    Outdated,
}

/// Why nothing is restarted now although pods are on the old template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutWait {
    /// A membership change or solo recovery is in flight.
    MembershipChanging,
    /// This pod is being deleted or re-created.
    PodRestarting { ordinal: u32 },
    /// This pod is on the new template and not Ready yet.
    PodStarting { ordinal: u32 },
    /// Restarting a healthy pod now would leave fewer than every other
    /// voter serving: these voters' pods are not ready.
    VotersNotReady { ordinals: Vec<u32> },
    /// No leader answered, so there is no telling who may restart.
    NoLeader,
}

/// The rollout planner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutPlan {
    /// Every pod runs the current template.
    UpToDate,
    /// Delete this pod; the StatefulSet re-creates it from the new template.
    Restart {
        ordinal: u32,
        reason: RestartReason,
    },
    /// Ask the leader (at `from`, an ordinal) to hand leadership to member `to`.
    MoveLeader {
        from: u32,
        to: u64,
    },
    Wait(RolloutWait),
}

/// The single next rollout step; see the module docs for the rules.
pub fn plan_rollout(input: &RolloutInput<'_>) -> RolloutPlan {
    let Some(revision) = input.update_revision else {
        return RolloutPlan::UpToDate;
    };
    let current = |pod: &PodState| pod.revision.as_deref() == Some(revision);
    let outdated: Vec<u32> = input
        .pods
        .iter()
        .filter(|(_, pod)| !current(pod))
        .map(|(&ordinal, _)| ordinal)
        .collect();
    if outdated.is_empty() {
        return RolloutPlan::UpToDate;
    }
    // Rule 1.
    // (Waiting for a leader is not a change in flight: rules 3 and 4 decide
    // then, so a fixed image still reaches members a bad one took down.)
    let membership_busy = matches!(
        input.membership,
        Plan::Act(_) | Plan::Wait(Wait::PodStarting { .. } | Wait::LearnerCatchingUp { .. })
    ) || input
        .observed
        .membership
        .as_ref()
        .is_some_and(|m| m.iter().any(|member| member.is_learner));
    if input.recovery_holds_members || membership_busy {
        return RolloutPlan::Wait(RolloutWait::MembershipChanging);
    }
    // Rule 2.
    for ordinal in 0..input.replicas {
        match input.pods.get(&ordinal) {
            None => return RolloutPlan::Wait(RolloutWait::PodRestarting { ordinal }),
            Some(pod) if pod.terminating => {
                return RolloutPlan::Wait(RolloutWait::PodRestarting { ordinal })
            }
            Some(pod) if current(pod) && !pod.ready && pod.ready_for < START_GRACE => {
                return RolloutPlan::Wait(RolloutWait::PodStarting { ordinal })
            }
            Some(_) => {}
        }
    }
    // Rule 3.
    if let Some(&ordinal) = outdated.iter().find(|&&ordinal| {
        let pod = &input.pods[&ordinal];
        !pod.ready && pod.ready_for >= UNHEALTHY_AFTER
    }) {
        return RolloutPlan::Restart {
            ordinal,
            reason: RestartReason::Unhealthy,
        };
    }
    // Rule 4.
    let Some(membership) = input.observed.membership.as_ref() else {
        return RolloutPlan::Wait(RolloutWait::NoLeader);
    };
    let Some(leader) = current_leader(&input.observed.reports) else {
        return RolloutPlan::Wait(RolloutWait::NoLeader);
    };
    let voters: Vec<u32> = membership
        .iter()
        .filter(|m| !m.is_learner)
        .filter_map(|m| ordinal_of(m.id))
        .collect();
    let serves = |ordinal: u32| {
        input.pods.get(&ordinal).is_some_and(|pod| pod.ready)
            && input
                .observed
                .report_of(member_id(ordinal))
                .is_some_and(|r| r.is_ready())
    };
    let candidates: Vec<u32> = outdated
        .iter()
        .copied()
        .filter(|&ordinal| input.pods[&ordinal].ready)
        .collect();
    let Some(&first) = candidates
        .iter()
        .find(|&&ordinal| ordinal != leader)
        .or(candidates.first())
    else {
        // Old-template pods that are not Ready, not yet long enough to count
        // as unhealthy.
        let ordinal = outdated[0];
        return RolloutPlan::Wait(RolloutWait::PodStarting { ordinal });
    };
    let not_serving: Vec<u32> = voters
        .iter()
        .copied()
        .filter(|&ordinal| ordinal != first && !serves(ordinal))
        .collect();
    if !not_serving.is_empty() {
        return RolloutPlan::Wait(RolloutWait::VotersNotReady {
            ordinals: not_serving,
        });
    }
    // Rule 5.
    if first == leader {
        let successor = voters
            .iter()
            .copied()
            .find(|&ordinal| ordinal != leader && input.pods.get(&ordinal).is_some_and(current));
        if let Some(to) = successor {
            return RolloutPlan::MoveLeader {
                from: leader,
                to: member_id(to),
            };
        }
        if voters.len() > 1 {
            // Every other voter is still on the old template: restart those
            // first (only reached when they are not Ready pods, see above).
            return RolloutPlan::Wait(RolloutWait::VotersNotReady {
                ordinals: voters.into_iter().filter(|&o| o != leader).collect(),
            });
        }
    }
    RolloutPlan::Restart {
        ordinal: first,
        reason: RestartReason::Outdated,
    }
}

/// The `PodsUpToDate` condition: (status, reason, message).
pub fn condition(plan: &RolloutPlan) -> (bool, &'static str, String) {
    match plan {
        RolloutPlan::UpToDate => (
            true,
            "UpToDate",
            "every member pod runs the current template".to_string(),
        ),
        RolloutPlan::Restart { ordinal, reason } => (
            false,
            "Restarting",
            match reason {
                RestartReason::Unhealthy => {
                    format!("restarting pod ordinal {ordinal} (not Ready, on the old template)")
                }
                RestartReason::Outdated => {
                    format!("restarting pod ordinal {ordinal} (every other voter serves)")
                }
            },
        ),
        RolloutPlan::MoveLeader { from, to } => (
            false,
            "MovingLeader",
            format!(
                "moving leadership from pod ordinal {from} to member {to} before restarting it"
            ),
        ),
        RolloutPlan::Wait(wait) => (false, "Waiting", describe_wait(wait)),
    }
}

fn describe_wait(wait: &RolloutWait) -> String {
    match wait {
        RolloutWait::MembershipChanging => {
            "waiting for the membership change or recovery in flight".to_string()
        }
        RolloutWait::PodRestarting { ordinal } => {
            format!("waiting for pod ordinal {ordinal} to be re-created")
        }
        RolloutWait::PodStarting { ordinal } => {
            format!("waiting for pod ordinal {ordinal} to become Ready")
        }
        RolloutWait::VotersNotReady { ordinals } => format!(
            "not restarting a serving member while the voters of pod ordinals {ordinals:?} are not ready"
        ),
        RolloutWait::NoLeader => "waiting for a leader".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{MemberReport, RaftMember, Role, Step};

    const NEW: &str = "demo-new";
    const OLD: &str = "demo-old";
    const LONG: Duration = Duration::from_secs(600);

    fn pod(revision: &str, ready: bool, ready_for: Duration) -> PodState {
        PodState {
            revision: Some(revision.to_string()),
            ready,
            ready_for,
            terminating: false,
        }
    }

    /// Three voters, member 1 (pod 0) leading; every pod Ready on `OLD`.
    fn three() -> (Observed, BTreeMap<u32, PodState>) {
        let report = |ordinal: u32, role: Role| MemberReport {
            id: member_id(ordinal),
            role,
            term: 2,
            leader: 1,
            committed_index: 10,
            applied_index: 10,
            last_log_index: 10,
            cluster_id: 7,
            not_ready_reason: String::new(),
            epoch: 0,
            millis_since_leader: 0,
        };
        let observed = Observed {
            desired_replicas: 3,
            statefulset_replicas: Some(3),
            reports: BTreeMap::from([
                (0, report(0, Role::Leader)),
                (1, report(1, Role::Follower)),
                (2, report(2, Role::Follower)),
            ]),
            membership: Some(
                (0..3)
                    .map(|o| RaftMember {
                        id: member_id(o),
                        is_learner: false,
                        name: format!("demo-{o}"),
                    })
                    .collect(),
            ),
            initialized: true,
            ..Observed::default()
        };
        let pods = (0..3).map(|o| (o, pod(OLD, true, LONG))).collect();
        (observed, pods)
    }

    fn plan(observed: &Observed, pods: &BTreeMap<u32, PodState>) -> RolloutPlan {
        plan_with(observed, pods, &Plan::Converged)
    }

    fn plan_with(
        observed: &Observed,
        pods: &BTreeMap<u32, PodState>,
        membership: &Plan,
    ) -> RolloutPlan {
        plan_rollout(&RolloutInput {
            update_revision: Some(NEW),
            replicas: 3,
            pods: pods.clone(),
            observed,
            membership,
            recovery_holds_members: false,
        })
    }

    fn restart(ordinal: u32, reason: RestartReason) -> RolloutPlan {
        RolloutPlan::Restart { ordinal, reason }
    }

    #[test]
    fn followers_restart_one_at_a_time_and_the_leader_last_after_handing_over() {
        let (observed, mut pods) = three();
        assert_eq!(plan(&observed, &pods), restart(1, RestartReason::Outdated));
        // Pod 1 back on the new template, not Ready yet: wait for it.
        pods.insert(1, pod(NEW, false, Duration::from_secs(5)));
        assert_eq!(
            plan(&observed, &pods),
            RolloutPlan::Wait(RolloutWait::PodStarting { ordinal: 1 })
        );
        pods.insert(1, pod(NEW, true, Duration::from_secs(1)));
        assert_eq!(plan(&observed, &pods), restart(2, RestartReason::Outdated));
        pods.insert(2, pod(NEW, true, Duration::from_secs(1)));
        // Only the leader is left: leadership moves to a member on the new template.
        assert_eq!(
            plan(&observed, &pods),
            RolloutPlan::MoveLeader { from: 0, to: 2 }
        );
    }

    #[test]
    fn the_old_leader_restarts_once_it_no_longer_leads() {
        let (mut observed, mut pods) = three();
        pods.insert(1, pod(NEW, true, LONG));
        pods.insert(2, pod(NEW, true, LONG));
        observed.reports.get_mut(&0).unwrap().role = Role::Follower;
        observed.reports.get_mut(&1).unwrap().role = Role::Leader;
        observed.reports.get_mut(&1).unwrap().term = 3;
        assert_eq!(plan(&observed, &pods), restart(0, RestartReason::Outdated));
        pods.insert(0, pod(NEW, true, LONG));
        assert_eq!(plan(&observed, &pods), RolloutPlan::UpToDate);
    }

    #[test]
    fn with_a_member_down_the_down_one_restarts_first_and_no_healthy_one_before_it_serves() {
        let (mut observed, mut pods) = three();
        // Pod 2 hung: not Ready, its member does not answer.
        observed.reports.remove(&2);
        pods.insert(2, pod(OLD, false, Duration::from_secs(10)));
        // Not down long enough to count as unhealthy: a healthy pod must
        // not go either, or only one voter would serve.
        assert_eq!(
            plan(&observed, &pods),
            RolloutPlan::Wait(RolloutWait::VotersNotReady { ordinals: vec![2] })
        );
        pods.insert(2, pod(OLD, false, UNHEALTHY_AFTER));
        assert_eq!(plan(&observed, &pods), restart(2, RestartReason::Unhealthy));
        // Back on the new image but still not serving past the grace:
        // healthy members keep waiting.
        pods.insert(2, pod(NEW, false, START_GRACE));
        assert_eq!(
            plan(&observed, &pods),
            RolloutPlan::Wait(RolloutWait::VotersNotReady { ordinals: vec![2] })
        );
    }

    #[test]
    fn unhealthy_pods_restart_even_without_a_quorum() {
        // A bad image took two members down; the fixed image must reach them.
        let (mut observed, mut pods) = three();
        observed.reports.remove(&1);
        observed.reports.remove(&2);
        observed.membership = None;
        pods.insert(1, pod(OLD, false, LONG));
        pods.insert(2, pod(OLD, false, LONG));
        let no_leader = Plan::Wait(Wait::NoLeader);
        assert_eq!(
            plan_with(&observed, &pods, &no_leader),
            restart(1, RestartReason::Unhealthy)
        );
        // ...but no healthy one: nobody can tell who serves.
        pods.insert(1, pod(NEW, false, LONG));
        pods.insert(2, pod(NEW, false, LONG));
        assert_eq!(
            plan_with(&observed, &pods, &no_leader),
            RolloutPlan::Wait(RolloutWait::NoLeader)
        );
    }

    #[test]
    fn nothing_restarts_while_the_membership_changes_or_a_pod_is_away() {
        let (mut observed, mut pods) = three();
        let busy = Plan::Act(Step::Promote { id: 3 });
        assert_eq!(
            plan_with(&observed, &pods, &busy),
            RolloutPlan::Wait(RolloutWait::MembershipChanging)
        );
        let starting = Plan::Wait(Wait::PodStarting { ordinal: 2 });
        assert_eq!(
            plan_with(&observed, &pods, &starting),
            RolloutPlan::Wait(RolloutWait::MembershipChanging)
        );
        observed.membership.as_mut().unwrap()[2].is_learner = true;
        assert_eq!(
            plan(&observed, &pods),
            RolloutPlan::Wait(RolloutWait::MembershipChanging)
        );
        observed.membership.as_mut().unwrap()[2].is_learner = false;
        pods.get_mut(&1).unwrap().terminating = true;
        assert_eq!(
            plan(&observed, &pods),
            RolloutPlan::Wait(RolloutWait::PodRestarting { ordinal: 1 })
        );
        pods.remove(&1);
        assert_eq!(
            plan(&observed, &pods),
            RolloutPlan::Wait(RolloutWait::PodRestarting { ordinal: 1 })
        );
    }

    #[test]
    fn a_member_that_is_not_ready_holds_the_rollout_even_if_its_pod_is() {
        let (mut observed, pods) = three();
        observed.reports.get_mut(&2).unwrap().not_ready_reason = "catching up".to_string();
        assert_eq!(
            plan(&observed, &pods),
            RolloutPlan::Wait(RolloutWait::VotersNotReady { ordinals: vec![2] })
        );
    }

    #[test]
    fn solo_recovery_and_an_unknown_revision_hold_it_too() {
        let (observed, pods) = three();
        let mut input = RolloutInput {
            update_revision: Some(NEW),
            replicas: 3,
            pods,
            observed: &observed,
            membership: &Plan::Converged,
            recovery_holds_members: true,
        };
        assert_eq!(
            plan_rollout(&input),
            RolloutPlan::Wait(RolloutWait::MembershipChanging)
        );
        input.recovery_holds_members = false;
        input.update_revision = None;
        assert_eq!(plan_rollout(&input), RolloutPlan::UpToDate);
    }

    #[test]
    fn a_lone_member_restarts_in_place() {
        let (mut observed, mut pods) = three();
        observed.membership.as_mut().unwrap().truncate(1);
        observed.reports.retain(|&o, _| o == 0);
        pods.retain(|&o, _| o == 0);
        let input = RolloutInput {
            update_revision: Some(NEW),
            replicas: 1,
            pods,
            observed: &observed,
            membership: &Plan::Converged,
            recovery_holds_members: false,
        };
        assert_eq!(plan_rollout(&input), restart(0, RestartReason::Outdated));
    }

    #[test]
    fn the_condition_names_what_happens() {
        assert!(condition(&RolloutPlan::UpToDate).0);
        let (ok, reason, message) = condition(&RolloutPlan::Wait(RolloutWait::VotersNotReady {
            ordinals: vec![2],
        }));
        assert!(!ok);
        assert_eq!(reason, "Waiting");
        assert!(message.contains("[2]"), "{message}");
    }
}
