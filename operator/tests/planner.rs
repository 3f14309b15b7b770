//! The membership planner: whole scale sequences through a model cluster, a
//! crash between every pair of steps, and the refusals.

mod common;

use common::world::{drive, World, CLUSTER_ID};
use raftkv_operator::membership::planner::LEARNER_STALL_AFTER;
use raftkv_operator::membership::{
    plan_next_step, MemberReport, Observed, Plan, RaftMember, Refusal, Role, Step, Wait,
};
use std::collections::{BTreeMap, BTreeSet};
use Step::*;

fn scale(from: u32, to: u32) -> Step {
    ScaleStatefulSet { from, to }
}

fn grow(n: u32) -> Vec<Step> {
    // Adding member n (ordinal n-1): one more pod, then learner, then voter.
    vec![
        scale(n - 1, n),
        AddLearner {
            id: u64::from(n),
            ordinal: n - 1,
        },
        Promote { id: u64::from(n) },
    ]
}

fn shrink(n: u32) -> Vec<Step> {
    // Removing member n: out of Raft first, then its pod, then its volume.
    vec![
        RemoveMember { id: u64::from(n) },
        scale(n, n - 1),
        DeleteVolume { ordinal: n - 1 },
    ]
}

#[test]
fn bootstrap_zero_to_one() {
    let mut w = World::default();
    let steps = drive(&mut w, 1, 50);
    assert_eq!(steps, vec![scale(0, 1), Initialize]);
    assert_eq!(w.voters(), vec![1]);
    assert_eq!(w.initialize_calls_that_created, 1);
}

#[test]
fn one_to_three_to_five_to_three_to_one() {
    let mut w = World::default();
    drive(&mut w, 1, 50);
    assert_eq!(drive(&mut w, 3, 100), [grow(2), grow(3)].concat());
    assert_eq!(w.voters(), vec![1, 2, 3]);
    assert_eq!(drive(&mut w, 5, 100), [grow(4), grow(5)].concat());
    assert_eq!(w.voters(), vec![1, 2, 3, 4, 5]);
    assert_eq!(drive(&mut w, 3, 100), [shrink(5), shrink(4)].concat());
    assert_eq!(w.voters(), vec![1, 2, 3]);
    assert_eq!(drive(&mut w, 1, 100), [shrink(3), shrink(2)].concat());
    assert_eq!(w.voters(), vec![1]);
    assert_eq!(w.sts, Some(1));
    assert_eq!(w.volumes.keys().copied().collect::<Vec<_>>(), vec![0]);
}

#[test]
fn shrinking_away_the_leader_keeps_a_leader() {
    let mut w = World::default();
    drive(&mut w, 3, 100);
    w.leader = 3;
    assert_eq!(drive(&mut w, 2, 100), shrink(3));
    assert_ne!(w.leader, 3);
    assert_eq!(w.voters(), vec![1, 2]);
}

/// The full path 0 -> 3 -> 5 -> 1, with the operator "crashing" after step k:
/// the step took effect, its status write (if any) was lost, and the next run
/// repeats the step before planning afresh. Every k must reach the same end.
#[test]
fn a_crash_between_any_two_steps_converges_to_the_same_cluster() {
    let plan = [3u32, 5, 1];
    let run = |crash_at: Option<usize>| {
        let mut w = World::default();
        let mut k = 0;
        for &desired in &plan {
            for _ in 0..200 {
                let observed = w.observe(desired);
                match plan_next_step(&observed) {
                    Plan::Converged => break,
                    Plan::Act(step) => {
                        w.apply(&step);
                        if crash_at == Some(k) {
                            if step == Initialize {
                                w.initialized_status = false; // status patch lost
                            }
                            w.apply(&step); // the restarted operator repeats it
                        }
                        k += 1;
                    }
                    Plan::Wait(_) => w.tick(),
                    Plan::Refuse(r) => panic!("crash at {crash_at:?}: refused {r:?}"),
                }
            }
        }
        (w, k)
    };
    let (clean, total) = run(None);
    assert_eq!(clean.voters(), vec![1]);
    assert!(total >= 20, "the path has {total} steps");
    for crash_at in 0..total {
        let (w, _) = run(Some(crash_at));
        assert_eq!(w.voters(), clean.voters(), "crash after step {crash_at}");
        assert_eq!(w.sts, clean.sts, "crash after step {crash_at}");
        assert_eq!(w.volumes, clean.volumes, "crash after step {crash_at}");
        assert_eq!(
            w.initialize_calls_that_created, 1,
            "crash after step {crash_at}"
        );
    }
}

#[test]
fn initialize_is_retried_until_recorded_but_never_on_an_initialized_cluster() {
    let mut w = World::default();
    drive(&mut w, 1, 50);
    // Status lost (crash before the patch): the planner asks again, the node
    // treats it as a no-op for the same token.
    w.initialized_status = false;
    assert_eq!(plan_next_step(&w.observe(1)), Plan::Act(Initialize));
    // Recorded: never again, even if pod 0 comes back empty.
    w.initialized_status = true;
    w.pods.get_mut(&0).unwrap().cluster_id = 0;
    assert_ne!(plan_next_step(&w.observe(1)), Plan::Act(Initialize));
}

fn report(id: u64, role: Role, ready: bool) -> MemberReport {
    MemberReport {
        id,
        role,
        term: 1,
        leader: 1,
        committed_index: 100,
        applied_index: 100,
        last_log_index: 100,
        cluster_id: CLUSTER_ID,
        not_ready_reason: if ready {
            String::new()
        } else {
            "no leader".into()
        },
        epoch: 0,
        millis_since_leader: 0,
    }
}

/// Voters `1..=voters` (1 leads), every pod running and ready, `sts` pods.
fn healthy(voters: u64, desired: u32) -> Observed {
    let membership: Vec<RaftMember> = (1..=voters)
        .map(|id| RaftMember {
            id,
            is_learner: false,
            name: format!("demo-{}", id - 1),
        })
        .collect();
    let reports: BTreeMap<u32, MemberReport> = (1..=voters)
        .map(|id| {
            let role = if id == 1 {
                Role::Leader
            } else {
                Role::Follower
            };
            ((id - 1) as u32, report(id, role, true))
        })
        .collect();
    Observed {
        desired_replicas: desired,
        statefulset_replicas: Some(voters as u32),
        volumes: (0..voters as u32).collect::<BTreeSet<_>>(),
        reports,
        membership: Some(membership),
        initialized: true,
        learner_waiting_for: None,
        restore_from_backup: None,
    }
}

#[test]
fn refuses_to_shrink_while_a_remaining_voter_is_not_ready() {
    let mut o = healthy(5, 3);
    o.reports.get_mut(&3).unwrap().not_ready_reason = "lagging".into(); // member 4
    assert_eq!(
        plan_next_step(&o),
        Plan::Refuse(Refusal::UnhealthyRefusingToShrink { not_ready: vec![4] })
    );
    // A member 4 whose pod is gone altogether: same answer.
    o.reports.remove(&3);
    assert!(matches!(
        plan_next_step(&o),
        Plan::Refuse(Refusal::UnhealthyRefusingToShrink { .. })
    ));
}

#[test]
fn removing_the_dead_member_itself_is_allowed_but_not_below_quorum() {
    let mut o = healthy(5, 4);
    o.reports.remove(&4); // member 5 is dead; 4 of 5 ready
    assert_eq!(plan_next_step(&o), Plan::Act(RemoveMember { id: 5 }));
    // Two voters, one dead: the removal itself needs both (joint consensus).
    let mut two = healthy(2, 1);
    two.reports.remove(&1);
    assert_eq!(
        plan_next_step(&two),
        Plan::Refuse(Refusal::UnhealthyRefusingToShrink { not_ready: vec![2] })
    );
}

#[test]
fn refuses_to_shrink_without_a_leader() {
    let mut o = healthy(3, 1);
    o.reports.get_mut(&0).unwrap().role = Role::Follower;
    assert!(matches!(
        plan_next_step(&o),
        Plan::Refuse(Refusal::UnhealthyRefusingToShrink { .. })
    ));
}

#[test]
fn a_stale_volume_is_deleted_before_its_ordinal_comes_back() {
    // Scaled down from 5 earlier, but the PVCs of ordinals 3 and 4 survived.
    let mut o = healthy(3, 5);
    o.volumes.extend([3, 4]);
    assert_eq!(plan_next_step(&o), Plan::Act(DeleteVolume { ordinal: 4 }));
    o.volumes.remove(&4);
    assert_eq!(plan_next_step(&o), Plan::Act(DeleteVolume { ordinal: 3 }));
    o.volumes.remove(&3);
    assert_eq!(plan_next_step(&o), Plan::Act(scale(3, 4)));
}

#[test]
fn a_pod_with_old_data_is_reset_instead_of_added() {
    let mut o = healthy(3, 4);
    o.statefulset_replicas = Some(4);
    o.volumes.insert(3);
    // Pod 3 came up with data from some earlier life (cluster id set), yet is no member.
    o.reports.insert(
        3,
        MemberReport {
            role: Role::Other,
            term: 1,
            leader: 0,
            ..report(4, Role::Other, false)
        },
    );
    assert_eq!(plan_next_step(&o), Plan::Act(ResetMember { ordinal: 3 }));
    // Once it reports empty, it is added as a learner with id ordinal + 1.
    o.reports.get_mut(&3).unwrap().cluster_id = 0;
    assert_eq!(
        plan_next_step(&o),
        Plan::Act(AddLearner { id: 4, ordinal: 3 })
    );
}

#[test]
fn the_world_model_rejects_stale_data_end_to_end() {
    let mut w = World::default();
    drive(&mut w, 3, 100);
    // Leave a stale volume behind for ordinal 2 after a scale-down...
    drive(&mut w, 2, 100);
    w.volumes.insert(2, CLUSTER_ID);
    // ...and scale up again: the volume goes before pod 2 is created.
    let steps = drive(&mut w, 3, 100);
    assert_eq!(steps[0], DeleteVolume { ordinal: 2 });
    assert_eq!(w.voters(), vec![1, 2, 3]);
}

#[test]
fn a_voter_whose_volume_was_lost_is_removed_then_added_again() {
    // Member 3's pod came back empty: the node refuses it (its data dir is
    // not the one the cluster recorded), so it must leave and come back.
    let mut o = healthy(3, 3);
    let lost = o.reports.get_mut(&2).unwrap();
    lost.cluster_id = 0;
    lost.not_ready_reason = "not a member".into();
    assert_eq!(plan_next_step(&o), Plan::Act(RemoveMember { id: 3 }));
    // Not while another voter is not ready: that removal could cost quorum.
    o.reports.get_mut(&1).unwrap().not_ready_reason = "lagging".into();
    assert!(matches!(
        plan_next_step(&o),
        Plan::Refuse(Refusal::UnhealthyRefusingToShrink { .. })
    ));
}

#[test]
fn the_world_model_replaces_a_member_whose_volume_was_lost() {
    let mut w = World::default();
    drive(&mut w, 3, 100);
    w.lose_volume(1);
    w.tick(); // the pod answers again, empty
    let steps = drive(&mut w, 3, 100);
    assert_eq!(
        steps,
        [
            RemoveMember { id: 2 },
            AddLearner { id: 2, ordinal: 1 },
            Promote { id: 2 }
        ]
    );
    let mut voters = w.voters();
    voters.sort();
    assert_eq!(voters, vec![1, 2, 3]);
}

fn with_learner(applied: u64, waited_secs: u64) -> Observed {
    let mut o = healthy(3, 4);
    o.statefulset_replicas = Some(4);
    o.volumes.insert(3);
    o.membership.as_mut().unwrap().push(RaftMember {
        id: 4,
        is_learner: true,
        name: "demo-3".into(),
    });
    o.reports.insert(
        3,
        MemberReport {
            applied_index: applied,
            ..report(4, Role::Learner, false)
        },
    );
    o.learner_waiting_for = Some(std::time::Duration::from_secs(waited_secs));
    o
}

#[test]
fn a_learner_is_promoted_only_once_caught_up() {
    assert_eq!(
        plan_next_step(&with_learner(10, 5)),
        Plan::Wait(Wait::LearnerCatchingUp {
            id: 4,
            stalled: false
        })
    );
    assert_eq!(
        plan_next_step(&with_learner(95, 5)),
        Plan::Act(Promote { id: 4 })
    );
}

#[test]
fn a_learner_that_never_catches_up_is_reported_and_nothing_is_removed() {
    let o = with_learner(10, LEARNER_STALL_AFTER.as_secs() + 1);
    assert_eq!(
        plan_next_step(&o),
        Plan::Wait(Wait::LearnerCatchingUp {
            id: 4,
            stalled: true
        })
    );
    // And no other membership change starts meanwhile, even if the spec grows.
    let mut bigger = o.clone();
    bigger.desired_replicas = 5;
    assert_eq!(
        plan_next_step(&bigger),
        Plan::Wait(Wait::LearnerCatchingUp {
            id: 4,
            stalled: true
        })
    );
    // Only an explicit scale-down removes it.
    let mut smaller = o;
    smaller.desired_replicas = 3;
    assert_eq!(plan_next_step(&smaller), Plan::Act(RemoveMember { id: 4 }));
}

#[test]
fn promotion_that_would_lose_quorum_is_refused() {
    // Voters 1..3 with 2 and 3 not ready: promoting 4 gives 2 ready of 4 (< 3).
    let mut o = with_learner(100, 5);
    o.reports.get_mut(&1).unwrap().not_ready_reason = "x".into();
    o.reports.get_mut(&2).unwrap().not_ready_reason = "x".into();
    assert_eq!(
        plan_next_step(&o),
        Plan::Refuse(Refusal::PromotionWouldLoseQuorum { id: 4 })
    );
}

#[test]
fn waits_for_the_pod_and_the_leader() {
    let mut o = healthy(1, 2);
    o.statefulset_replicas = Some(2);
    assert_eq!(
        plan_next_step(&o),
        Plan::Wait(Wait::PodStarting { ordinal: 1 })
    );
    o.membership = None;
    assert_eq!(plan_next_step(&o), Plan::Wait(Wait::NoLeader));
}

#[test]
fn pods_scaled_away_from_outside_come_back_before_a_leader_is_awaited() {
    // `kubectl scale sts --replicas=1` on three voters: pods 1 and 2 are gone
    // and the quorum with them; their volumes stay (whenScaled: Retain).
    let mut o = healthy(3, 3);
    o.statefulset_replicas = Some(1);
    o.membership = None;
    o.reports.retain(|ordinal, _| *ordinal == 0);
    assert_eq!(plan_next_step(&o), Plan::Act(scale(1, 2)));
    o.statefulset_replicas = Some(2);
    assert_eq!(plan_next_step(&o), Plan::Act(scale(2, 3)));
    // Every volume has its pod again: now the leader is awaited.
    o.statefulset_replicas = Some(3);
    assert_eq!(plan_next_step(&o), Plan::Wait(Wait::NoLeader));
}

#[test]
fn foreign_members_are_not_touched() {
    let mut o = healthy(3, 1);
    o.membership.as_mut().unwrap().push(RaftMember {
        id: 0xdead_beef,
        is_learner: false,
        name: "x".into(),
    });
    assert_eq!(
        plan_next_step(&o),
        Plan::Refuse(Refusal::ForeignMember { id: 0xdead_beef })
    );
}

#[test]
fn converged_cluster_needs_nothing() {
    assert_eq!(plan_next_step(&healthy(3, 3)), Plan::Converged);
}
