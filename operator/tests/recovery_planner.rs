//! The solo-recovery planner as tables: when quorum loss counts as proven,
//! which member is chosen, the order of steps, once per generation, and a
//! whole recovery replayed with a crash (status not written) after every step.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use raftkv_operator::crd::{RecoveryPhase, RecoveryStatus, SoloRecoverySpec};
use raftkv_operator::membership::{MemberReport, Observed, PodState, RaftMember, Role};
use raftkv_operator::recovery::{
    describe_wait, plan_recovery, record, RecoveryInput, RecoveryPlan, RecoveryRefusal,
    RecoveryStep, RecoveryWait, KUBERNETES_DOWN_AFTER,
};
use std::collections::BTreeMap;
use std::time::Duration;

const CLUSTER: u64 = 0xc1;
const THRESHOLD: Duration = Duration::from_secs(60);

fn member(id: u64, role: Role, applied: u64, millis_since_leader: u64) -> MemberReport {
    MemberReport {
        id,
        role,
        term: 1,
        leader: if role == Role::Leader || role == Role::Follower && millis_since_leader == 0 {
            1
        } else {
            0
        },
        committed_index: applied,
        applied_index: applied,
        last_log_index: applied,
        cluster_id: CLUSTER,
        not_ready_reason: if millis_since_leader == 0 {
            String::new()
        } else {
            "no leader".into()
        },
        epoch: 0,
        millis_since_leader,
    }
}

fn empty(id: u64) -> MemberReport {
    MemberReport {
        cluster_id: 0,
        applied_index: 0,
        ..member(id, Role::Other, 0, 0)
    }
}

/// `sts` pods; `reports` by ordinal; volumes for every pod.
fn observed(sts: u32, reports: Vec<(u32, MemberReport)>) -> Observed {
    Observed {
        desired_replicas: sts,
        statefulset_replicas: Some(sts),
        reports: reports.into_iter().collect(),
        volumes: (0..sts).collect(),
        membership: None,
        initialized: true,
        ..Observed::default()
    }
}

fn solo(from: IntOrString) -> SoloRecoverySpec {
    SoloRecoverySpec { from_member: from }
}

fn auto() -> SoloRecoverySpec {
    solo(IntOrString::String("auto".into()))
}

fn plan(
    o: &Observed,
    request: Option<&SoloRecoverySpec>,
    status: Option<&RecoveryStatus>,
    generation: i64,
) -> RecoveryPlan {
    plan_recovery(&RecoveryInput {
        request,
        generation,
        status,
        observed: o,
        known_voters: &[1, 2, 3],
        leaderless_threshold: THRESHOLD,
        pods: &BTreeMap::new(),
    })
}

const LONG: u64 = 120_000;

#[test]
fn no_request_means_nothing_to_do() {
    let o = observed(3, vec![(0, member(1, Role::Follower, 10, LONG))]);
    assert_eq!(plan(&o, None, None, 1), RecoveryPlan::Idle);
}

#[test]
fn a_healthy_quorum_refuses_once_per_generation() {
    let mut o = observed(
        3,
        vec![
            (0, member(1, Role::Leader, 10, 0)),
            (1, member(2, Role::Follower, 10, 0)),
            (2, member(3, Role::Follower, 10, 0)),
        ],
    );
    o.membership = Some(
        (1..=3)
            .map(|id| RaftMember {
                id,
                is_learner: false,
                name: String::new(),
            })
            .collect(),
    );
    let request = auto();
    let refused = plan(&o, Some(&request), None, 4);
    assert_eq!(
        refused,
        RecoveryPlan::Refuse(RecoveryRefusal::QuorumNotLost { leader_ordinal: 0 })
    );
    let status = record(None, 4, &refused, None, "t1").expect("recorded");
    assert_eq!(status.phase, RecoveryPhase::Refused);
    assert_eq!(status.generation, 4);
    assert_eq!(status.reason, "QuorumNotLost");
    assert!(
        status.message.contains("quorum is not lost"),
        "{}",
        status.message
    );
    // Same generation: not evaluated again, even after quorum is lost later.
    let lost = observed(3, vec![(0, member(1, Role::Candidate, 10, LONG))]);
    assert_eq!(
        plan(&lost, Some(&request), Some(&status), 4),
        RecoveryPlan::Idle
    );
    // An edited spec (new generation) is evaluated afresh.
    assert!(matches!(
        plan(&lost, Some(&request), Some(&status), 5),
        RecoveryPlan::Act(RecoveryStep::Begin { member: 0, .. })
    ));
}

/// Pods 0..3 as Kubernetes reports them: Ready for long, except `not_ready`
/// (not Ready for `for_`).
fn pods(not_ready: &[u32], for_: Duration) -> BTreeMap<u32, PodState> {
    (0..3)
        .map(|o| {
            let down = not_ready.contains(&o);
            let pod = PodState {
                ready: !down,
                ready_for: if down {
                    for_
                } else {
                    Duration::from_secs(3600)
                },
                ..PodState::default()
            };
            (o, pod)
        })
        .collect()
}

/// An `auto` request while the operator reaches only pod 0 (with data,
/// leaderless for long), with Kubernetes reporting `pods`.
fn only_pod_0_answers(threshold: Duration, pods: &BTreeMap<u32, PodState>) -> RecoveryPlan {
    let request = auto();
    let o = observed(3, vec![(0, member(1, Role::Candidate, 10, LONG))]);
    plan_recovery(&RecoveryInput {
        request: Some(&request),
        generation: 1,
        status: None,
        observed: &o,
        known_voters: &[1, 2, 3],
        leaderless_threshold: threshold,
        pods,
    })
}

#[test]
fn a_member_kubernetes_sees_ready_is_not_lost_however_unreachable() {
    // The operator reaches only pod 0, leaderless for long: on its own that
    // proves quorum lost. But Kubernetes reports pods 1 and 2 Ready: the
    // operator and pod 0 may be the minority side of a partition, with the
    // majority serving on the other. Resetting 1 and 2 would lose its data.
    let with_pods = |pods: &BTreeMap<u32, PodState>| only_pod_0_answers(THRESHOLD, pods);
    let long = Duration::from_secs(600);
    assert_eq!(
        with_pods(&pods(&[0], long)),
        RecoveryPlan::Wait(RecoveryWait::UnreachableButReady { ordinal: 1 })
    );
    assert_eq!(
        with_pods(&pods(&[1], long)),
        RecoveryPlan::Wait(RecoveryWait::UnreachableButReady { ordinal: 2 })
    );
    // 1 and 2 not Ready for long, or without pods: lost.
    assert!(matches!(
        with_pods(&pods(&[1, 2], long)),
        RecoveryPlan::Act(RecoveryStep::Begin { member: 0, .. })
    ));
    let mut gone = pods(&[], long);
    gone.retain(|&o, _| o == 0);
    assert!(matches!(
        with_pods(&gone),
        RecoveryPlan::Act(RecoveryStep::Begin { member: 0, .. })
    ));
}

#[test]
fn a_voter_whose_pod_turned_not_ready_moments_ago_is_not_lost() {
    // Cutting the operator and pod 0 off (pod 0 leading) sends 1 and 2
    // through an election: their readiness probes fail for a few seconds,
    // then pass again under their new leader. Seen in a CI journey: that
    // blip, taken for "not Ready", let the operator recover pod 0 alone
    // next to a healthy majority. Not Ready counts only once it has lasted
    // the leaderless threshold, and at least KUBERNETES_DOWN_AFTER.
    let with_pods =
        |pods: &BTreeMap<u32, PodState>| only_pod_0_answers(Duration::from_secs(5), pods);
    assert_eq!(
        with_pods(&pods(&[1, 2], Duration::from_secs(6))),
        RecoveryPlan::Wait(RecoveryWait::UnreachableButReady { ordinal: 1 })
    );
    assert_eq!(
        with_pods(&pods(
            &[1, 2],
            KUBERNETES_DOWN_AFTER - Duration::from_secs(1)
        )),
        RecoveryPlan::Wait(RecoveryWait::UnreachableButReady { ordinal: 1 })
    );
    assert!(matches!(
        with_pods(&pods(&[1, 2], KUBERNETES_DOWN_AFTER)),
        RecoveryPlan::Act(RecoveryStep::Begin { member: 0, .. })
    ));
}

#[test]
fn quorum_loss_must_be_proven_by_the_members() {
    let request = auto();
    let rows: Vec<(&str, Observed, RecoveryPlan)> = vec![
        (
            "one of three answers, leaderless for long",
            observed(3, vec![(0, member(1, Role::Candidate, 10, LONG))]),
            RecoveryPlan::Act(RecoveryStep::Begin {
                member: 0,
                from_epoch: 0,
            }),
        ),
        (
            "leaderless, but not for long enough",
            observed(3, vec![(0, member(1, Role::Candidate, 10, 5_000))]),
            RecoveryPlan::Wait(RecoveryWait::LeaderSeenRecently {
                ordinal: 0,
                millis: 5_000,
            }),
        ),
        (
            "two of three answer: a majority",
            observed(
                3,
                vec![
                    (0, member(1, Role::Candidate, 10, LONG)),
                    (1, member(2, Role::Follower, 10, LONG)),
                ],
            ),
            RecoveryPlan::Wait(RecoveryWait::MajorityReachable {
                reachable: 2,
                voters: 3,
            }),
        ),
        (
            "two answer, but one lost its volume (came back empty)",
            observed(
                3,
                vec![(0, member(1, Role::Candidate, 10, LONG)), (1, empty(2))],
            ),
            RecoveryPlan::Act(RecoveryStep::Begin {
                member: 0,
                from_epoch: 0,
            }),
        ),
        (
            "just after the loss: the survivor still names the old leader",
            observed(3, vec![(1, member(2, Role::Follower, 10, 0))]),
            RecoveryPlan::Wait(RecoveryWait::LeaderSeenRecently {
                ordinal: 1,
                millis: 0,
            }),
        ),
        (
            "nobody with data answers",
            observed(3, vec![(2, empty(3))]),
            RecoveryPlan::Wait(RecoveryWait::NoSurvivorReachable),
        ),
    ];
    for (what, o, expected) in rows {
        assert_eq!(plan(&o, Some(&request), None, 1), expected, "{what}");
    }
    let mut fresh = observed(3, vec![(0, member(1, Role::Candidate, 10, LONG))]);
    fresh.initialized = false;
    assert_eq!(
        plan(&fresh, Some(&request), None, 1),
        RecoveryPlan::Refuse(RecoveryRefusal::NotInitialized)
    );
}

#[test]
fn auto_picks_the_highest_applied_index_and_an_ordinal_is_checked() {
    let five = |reports| {
        let o = observed(5, reports);
        move |request: &SoloRecoverySpec| {
            plan_recovery(&RecoveryInput {
                request: Some(request),
                generation: 1,
                status: None,
                observed: &o,
                known_voters: &[1, 2, 3, 4, 5],
                leaderless_threshold: THRESHOLD,
                pods: &BTreeMap::new(),
            })
        }
    };
    let p = five(vec![
        (0, member(1, Role::Candidate, 90, LONG)),
        (3, member(4, Role::Follower, 100, LONG)),
        (4, empty(5)),
    ]);
    assert_eq!(
        p(&auto()),
        RecoveryPlan::Act(RecoveryStep::Begin {
            member: 3,
            from_epoch: 0
        })
    );
    assert_eq!(
        p(&solo(IntOrString::Int(0))),
        RecoveryPlan::Act(RecoveryStep::Begin {
            member: 0,
            from_epoch: 0
        })
    );
    assert_eq!(
        p(&solo(IntOrString::String("2".into()))),
        RecoveryPlan::Wait(RecoveryWait::MemberUnreachable { ordinal: 2 })
    );
    assert_eq!(
        p(&solo(IntOrString::Int(4))),
        RecoveryPlan::Refuse(RecoveryRefusal::MemberHasNoData { ordinal: 4 })
    );
    for bad in [
        IntOrString::String("first".into()),
        IntOrString::Int(-1),
        IntOrString::Int(9),
    ] {
        assert!(
            matches!(
                p(&solo(bad.clone())),
                RecoveryPlan::Refuse(RecoveryRefusal::InvalidMember(_))
            ),
            "{bad:?}"
        );
    }
}

/// A toy cluster after quorum loss: which ordinals run with which data.
#[derive(Debug, Clone)]
struct Toy {
    sts: u32,
    /// Ordinal -> report (absent: not running).
    pods: BTreeMap<u32, MemberReport>,
    volumes: Vec<u32>,
    solo_calls: u32,
}

impl Toy {
    fn observe(&self) -> Observed {
        Observed {
            statefulset_replicas: Some(self.sts),
            desired_replicas: self.sts,
            reports: self.pods.clone(),
            volumes: self.volumes.iter().copied().collect(),
            initialized: true,
            ..Observed::default()
        }
    }

    fn apply(&mut self, step: &RecoveryStep) {
        match *step {
            RecoveryStep::Begin { .. } | RecoveryStep::Enter(_) => {}
            RecoveryStep::ResetMember { ordinal } => {
                self.pods.insert(ordinal, empty(u64::from(ordinal) + 1));
            }
            RecoveryStep::DeleteVolume { ordinal } => self.volumes.retain(|&v| v != ordinal),
            RecoveryStep::RecoverSolo { ordinal } => {
                let r = self.pods.get_mut(&ordinal).unwrap();
                assert_eq!(r.epoch, 0, "RecoverSolo sent twice");
                assert!(
                    self.pods
                        .iter()
                        .all(|(&o, p)| o == ordinal || p.cluster_id == 0),
                    "another member still had data when the survivor went solo"
                );
                let r = self.pods.get_mut(&ordinal).unwrap();
                r.epoch = 1;
                r.role = Role::Leader;
                r.millis_since_leader = 0;
                self.solo_calls += 1;
            }
        }
    }
}

/// Survivor ordinal 1 of 3 (ordinal 0's pod is down with its volume, ordinal
/// 2 lost its volume), plus a leftover volume at ordinal 3 beyond the StatefulSet.
fn lost_quorum() -> Toy {
    Toy {
        sts: 3,
        pods: BTreeMap::from([(1, member(2, Role::Candidate, 50, LONG)), (2, empty(3))]),
        volumes: vec![0, 1, 2, 3],
        solo_calls: 0,
    }
}

/// Plan and carry out until Growing; `crash_after` steps are taken but their
/// status is not written (the operator died). Returns the steps taken.
fn run(toy: &mut Toy, crash_after: Option<usize>) -> Vec<RecoveryStep> {
    let request = auto();
    let mut status: Option<RecoveryStatus> = None;
    let mut steps = Vec::new();
    for i in 0..30 {
        let o = toy.observe();
        let p = plan(&o, Some(&request), status.as_ref(), 7);
        match &p {
            RecoveryPlan::Growing => return steps,
            RecoveryPlan::Act(step) => {
                toy.apply(step);
                steps.push(step.clone());
                if crash_after != Some(i) {
                    status = record(status.as_ref(), 7, &p, None, "t");
                }
            }
            other => panic!("unexpected {other:?} after {steps:?}"),
        }
    }
    panic!("no end: {steps:?}");
}

#[test]
fn recovery_resets_the_others_before_going_solo_then_grows() {
    let mut toy = lost_quorum();
    let steps = run(&mut toy, None);
    assert_eq!(
        steps,
        vec![
            RecoveryStep::Begin {
                member: 1,
                from_epoch: 0
            },
            RecoveryStep::ResetMember { ordinal: 0 },
            RecoveryStep::ResetMember { ordinal: 2 },
            RecoveryStep::DeleteVolume { ordinal: 3 },
            RecoveryStep::Enter(RecoveryPhase::RecoveringSolo),
            RecoveryStep::RecoverSolo { ordinal: 1 },
        ]
    );
    assert_eq!(toy.solo_calls, 1);
}

#[test]
fn a_crash_after_any_step_resumes_without_repeating_recover_solo() {
    let clean = run(&mut lost_quorum(), None).len();
    for crash in 0..clean + 1 {
        let mut toy = lost_quorum();
        let steps = run(&mut toy, Some(crash));
        assert_eq!(toy.solo_calls, 1, "crash after step {crash}: {steps:?}");
        assert_eq!(toy.pods[&1].epoch, 1);
    }
}

#[test]
fn a_recovery_under_way_continues_whatever_the_spec_says_now() {
    let o = observed(3, vec![(0, member(1, Role::Candidate, 10, LONG))]);
    let status = RecoveryStatus {
        generation: 3,
        phase: RecoveryPhase::ResettingOthers,
        member: Some(0),
        from_epoch: 0,
        reset: vec![1],
        reason: "QuorumLost".into(),
        message: String::new(),
        since: "t".into(),
    };
    // The request removed, and the generation moved on: it still finishes.
    assert_eq!(
        plan(&o, None, Some(&status), 9),
        RecoveryPlan::Act(RecoveryStep::ResetMember { ordinal: 2 })
    );
    // Solo phase: an old member that came back with data is reset again first.
    let solo_phase = RecoveryStatus {
        phase: RecoveryPhase::RecoveringSolo,
        reset: vec![1, 2],
        ..status.clone()
    };
    let returned = observed(
        3,
        vec![
            (0, member(1, Role::Candidate, 10, LONG)),
            (2, member(3, Role::Candidate, 8, LONG)),
        ],
    );
    assert_eq!(
        plan(&returned, None, Some(&solo_phase), 9),
        RecoveryPlan::Act(RecoveryStep::ResetMember { ordinal: 2 })
    );
    // The chosen member came back empty: refused, nothing else is touched.
    let gone = observed(3, vec![(0, empty(1))]);
    assert_eq!(
        plan(&gone, None, Some(&solo_phase), 9),
        RecoveryPlan::Refuse(RecoveryRefusal::ChosenLostData { ordinal: 0 })
    );
    // Its pod restarting: wait.
    assert_eq!(
        plan(&observed(3, vec![]), None, Some(&solo_phase), 9),
        RecoveryPlan::Wait(RecoveryWait::PodStarting { ordinal: 0 })
    );
    // Growing: the membership planner's turn, until Completed is recorded.
    let growing = RecoveryStatus {
        phase: RecoveryPhase::Growing,
        ..solo_phase
    };
    assert_eq!(plan(&o, None, Some(&growing), 9), RecoveryPlan::Growing);
    let done = record(
        Some(&growing),
        9,
        &RecoveryPlan::Act(RecoveryStep::Enter(RecoveryPhase::Completed)),
        None,
        "t2",
    )
    .unwrap();
    assert_eq!(done.phase, RecoveryPhase::Completed);
    assert_eq!(done.generation, 3, "the recovery keeps its generation");
    assert_eq!(plan(&o, Some(&auto()), Some(&done), 3), RecoveryPlan::Idle);
}

#[test]
fn a_wait_is_described_the_same_while_it_lasts() {
    // A message that changed with the leaderless count was a status write,
    // a watch event and another reconcile every few hundred milliseconds.
    let at = |millis| describe_wait(&RecoveryWait::LeaderSeenRecently { ordinal: 0, millis });
    assert_eq!(at(100), at(4_900));
}
