//! A toy model of a raftkv cluster on Kubernetes, for driving the planner
//! through whole scale sequences: a StatefulSet, pods with the data on their
//! volumes, the Raft membership, and the node behaviours the planner relies on
//! (idempotent Initialize, AddMember/MemberRemove that tolerate repeats,
//! leadership handed over when the leader is removed, a member whose volume
//! was lost refused until it is removed and added again).

use raftkv_operator::membership::{
    plan_next_step, MemberReport, Observed, Plan, RaftMember, Role, Step,
};
use std::collections::{BTreeMap, BTreeSet};

pub const CLUSTER_ID: u64 = 0xc1;
const LOG_INDEX: u64 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// Ticks until it answers (a pod takes one tick to start).
    pub starting: u32,
    /// Cluster id on its volume (0 = empty).
    pub cluster_id: u64,
    pub applied: u64,
    /// Answers but reports not ready (a sick member).
    pub sick: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct World {
    pub sts: Option<u32>,
    pub pods: BTreeMap<u32, Pod>,
    /// Ordinal -> cluster id stored on that volume.
    pub volumes: BTreeMap<u32, u64>,
    pub members: Vec<RaftMember>,
    pub leader: u64,
    pub initialized_status: bool,
    pub initialize_calls_that_created: u32,
    /// Members whose pod lost its volume: the cluster recorded another data
    /// dir for them, so their empty pod is refused until they are removed.
    pub replaced: BTreeSet<u64>,
}

impl World {
    pub fn voters(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|m| !m.is_learner)
            .map(|m| m.id)
            .collect()
    }

    pub fn learners(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|m| m.is_learner)
            .map(|m| m.id)
            .collect()
    }

    /// The volume of `ordinal`'s running pod is lost: the pod restarts empty.
    pub fn lose_volume(&mut self, ordinal: u32) {
        self.volumes.insert(ordinal, 0);
        self.start_pod(ordinal);
        self.replaced.insert(u64::from(ordinal) + 1);
    }

    fn member(&self, id: u64) -> Option<&RaftMember> {
        self.members.iter().find(|m| m.id == id)
    }

    pub fn observe(&self, desired: u32) -> Observed {
        let mut reports = BTreeMap::new();
        for (&ord, pod) in &self.pods {
            if pod.starting > 0 {
                continue;
            }
            let id = u64::from(ord) + 1;
            let member = self.member(id);
            let role = match member {
                Some(m) if m.is_learner => Role::Learner,
                Some(_) if id == self.leader => Role::Leader,
                Some(_) => Role::Follower,
                None => Role::Other,
            };
            let in_cluster = member.is_some() && pod.cluster_id == CLUSTER_ID;
            let ready = in_cluster && !pod.sick && pod.applied == LOG_INDEX;
            reports.insert(
                ord,
                MemberReport {
                    id,
                    role,
                    term: 1,
                    leader: if in_cluster { self.leader } else { 0 },
                    committed_index: pod.applied,
                    applied_index: pod.applied,
                    last_log_index: if in_cluster { LOG_INDEX } else { pod.applied },
                    cluster_id: pod.cluster_id,
                    not_ready_reason: if ready {
                        String::new()
                    } else {
                        "not ready".into()
                    },
                    epoch: 0,
                    millis_since_leader: 0,
                },
            );
        }
        let leader_answers = self.leader != 0
            && reports
                .values()
                .any(|r| r.id == self.leader && r.role == Role::Leader);
        Observed {
            desired_replicas: desired,
            statefulset_replicas: self.sts,
            reports,
            volumes: self.volumes.keys().copied().collect::<BTreeSet<_>>(),
            membership: leader_answers.then(|| self.members.clone()),
            initialized: self.initialized_status,
            learner_waiting_for: None,
            restore_from_backup: None,
        }
    }

    /// Time passes: pods start, members replicate.
    pub fn tick(&mut self) {
        let members: Vec<u64> = self.members.iter().map(|m| m.id).collect();
        for (&ord, pod) in self.pods.iter_mut() {
            if pod.starting > 0 {
                pod.starting -= 1;
                continue;
            }
            let id = u64::from(ord) + 1;
            if members.contains(&id) && !pod.sick && !self.replaced.contains(&id) {
                pod.cluster_id = CLUSTER_ID;
                pod.applied = LOG_INDEX;
                self.volumes.insert(ord, CLUSTER_ID);
            }
        }
    }

    fn start_pod(&mut self, ord: u32) {
        let data = *self.volumes.entry(ord).or_insert(0);
        self.pods.insert(
            ord,
            Pod {
                starting: 1,
                cluster_id: data,
                applied: if data == 0 { 0 } else { LOG_INDEX / 2 },
                sick: false,
            },
        );
    }

    /// Carry out `step` the way the executor and the controller would.
    pub fn apply(&mut self, step: &Step) {
        match *step {
            Step::ScaleStatefulSet { to, .. } => {
                let from = self.sts.unwrap_or(0);
                self.sts = Some(to);
                for ord in from..to {
                    self.start_pod(ord);
                }
                for ord in to..from {
                    self.pods.remove(&ord);
                }
            }
            Step::Initialize => {
                let pod = self.pods.get_mut(&0).expect("pod 0 runs");
                if pod.cluster_id == 0 {
                    pod.cluster_id = CLUSTER_ID;
                    pod.applied = LOG_INDEX;
                    self.volumes.insert(0, CLUSTER_ID);
                    self.members = vec![RaftMember {
                        id: 1,
                        is_learner: false,
                        name: "demo-0".into(),
                    }];
                    self.leader = 1;
                    self.initialize_calls_that_created += 1;
                } else {
                    assert_eq!(
                        pod.cluster_id, CLUSTER_ID,
                        "Initialize refused: other cluster"
                    );
                }
                self.initialized_status = true;
            }
            Step::AddLearner { id, .. } => {
                if self.member(id).is_none() {
                    self.members.push(RaftMember {
                        id,
                        is_learner: true,
                        name: String::new(),
                    });
                }
            }
            Step::Promote { id } => {
                let ord = (id - 1) as u32;
                assert_eq!(
                    self.pods[&ord].applied, LOG_INDEX,
                    "promoted a lagging learner"
                );
                self.members
                    .iter_mut()
                    .find(|m| m.id == id)
                    .unwrap()
                    .is_learner = false;
            }
            Step::RemoveMember { id } => {
                self.members.retain(|m| m.id != id);
                self.replaced.remove(&id);
                if self.leader == id {
                    self.leader = self.voters().into_iter().min().unwrap_or(0);
                }
            }
            Step::DeleteVolume { ordinal } => {
                assert!(
                    !self.pods.contains_key(&ordinal),
                    "deleted a live pod's volume"
                );
                self.volumes.remove(&ordinal);
            }
            Step::ResetMember { ordinal } => {
                self.volumes.remove(&ordinal);
                self.start_pod(ordinal);
            }
        }
    }
}

/// Plan/apply until converged (or `max` plans), checking the safety invariants
/// after every step. Returns the steps taken.
pub fn drive(world: &mut World, desired: u32, max: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    for _ in 0..max {
        let observed = world.observe(desired);
        match plan_next_step(&observed) {
            Plan::Converged => return steps,
            Plan::Act(step) => {
                check_safe(world, &step);
                world.apply(&step);
                steps.push(step);
            }
            Plan::Wait(_) => world.tick(),
            Plan::Refuse(r) => panic!("refused in a healthy world: {r:?}; steps {steps:#?}"),
        }
    }
    panic!("no convergence to {desired} after {max} plans; steps {steps:#?}; world {world:#?}");
}

fn check_safe(world: &World, step: &Step) {
    match *step {
        Step::AddLearner { .. } => {
            assert!(
                world.learners().is_empty(),
                "two membership changes at once"
            )
        }
        Step::RemoveMember { id } if !world.learners().contains(&id) => {
            assert!(world.voters().len() > 1, "removed the last voter")
        }
        _ => {}
    }
}
