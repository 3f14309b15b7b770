//! One reconcile of one RaftCluster: what its phases share (the resource, the
//! names, the Kubernetes calls, the clock) in one place, and the phases that
//! are the controller's own: the owned objects, the observation, the one
//! membership step. Solo recovery, backups and status are phases too, in
//! [`super::recovery`], [`super::backups`] and [`super::report`].

use super::context::Context;
use super::kube_ops::KubeOps;
use crate::crd::{RaftCluster, RaftClusterStatus};
use crate::members::MemberApi;
use crate::membership::executor::Outcome;
use crate::membership::{MemberEndpoints, Observed, Plan, Step};
use crate::resources::{self, ClaimTemplate, Owned};
use crate::status::step_reason;
use crate::volumes::ClaimSize;
use crate::Error;
use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use std::collections::BTreeMap;
use std::time::Duration;

/// One reconcile's state; each phase is a method.
pub struct Reconciler<'a, M: MemberApi> {
    pub rc: &'a RaftCluster,
    pub ctx: &'a Context<M>,
    pub owned: Owned,
    pub kube: KubeOps,
    /// How the members are reached: plaintext, or over TLS once the
    /// certificates phase has them (see [`super::certificates`]).
    pub members: MemberEndpoints,
    /// The RaftCluster's uid: members refuse membership calls without it.
    pub token: String,
    pub now: Timestamp,
}

/// The StatefulSet as this reconcile keeps it.
pub struct StatefulSetNow {
    /// Its replica count (the planner's, or re-created from status).
    pub replicas: u32,
    /// Its volume claim template: fixed once it exists.
    pub claims: ClaimTemplate,
    /// The revision of its current pod template, once the StatefulSet
    /// controller has caught up with the last change (for the rollout).
    pub update_revision: Option<String>,
}

/// What the membership step of one reconcile did.
#[derive(Default)]
pub struct StepRound {
    /// Set when this round initialized the cluster.
    pub initialized_cluster_id: Option<u64>,
    /// The step failed (reported in status, returned as the reconcile's error).
    pub failure: Option<Error>,
}

impl<'a, M: MemberApi> Reconciler<'a, M> {
    pub fn new(rc: &'a RaftCluster, ctx: &'a Context<M>) -> Result<Self, Error> {
        let owned = Owned::of(rc)?;
        let kube = KubeOps::new(
            ctx.client.clone(),
            ctx.reporter.clone(),
            rc,
            owned.names.clone(),
        );
        Ok(Reconciler {
            rc,
            ctx,
            members: MemberEndpoints::plain(owned.names.clone()),
            owned,
            kube,
            token: rc.metadata.uid.clone().unwrap_or_default(),
            now: Timestamp::now(),
        })
    }

    /// The clock the scheduled phases (backups, maintenance) plan with: now,
    /// and when the RaftCluster was created (nothing is owed before it).
    pub fn schedule_clock(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        let now = DateTime::from_timestamp_millis(self.now.as_millisecond()).unwrap_or_default();
        let created = self
            .rc
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| DateTime::from_timestamp_millis(t.0.as_millisecond()))
            .unwrap_or(now);
        (now, created)
    }

    /// Makes sure the owned objects exist and match the spec (server-side
    /// apply); the StatefulSet keeps the replica count the planner gave it
    /// and the claim template it was created with. Returns both.
    pub async fn apply_owned_objects(&self) -> Result<StatefulSetNow, Error> {
        let names = &self.owned.names;
        self.kube
            .apply::<Service>(&names.peer_service(), &resources::peer_service(&self.owned))
            .await?;
        self.kube
            .apply::<Service>(
                &names.client_service(),
                &resources::client_service(&self.owned),
            )
            .await?;
        let found = self.kube.statefulset().await?;
        let replicas = match found.as_ref().and_then(|s| s.spec.as_ref()?.replicas) {
            Some(replicas) => replicas.max(0) as u32,
            None => replicas_to_recreate(self.rc.status.as_ref()),
        };
        let claims = found
            .as_ref()
            .and_then(ClaimTemplate::of_statefulset)
            .unwrap_or_else(|| ClaimTemplate::of_spec(self.rc));
        let update_revision = found.as_ref().and_then(|s| {
            let status = s.status.as_ref()?;
            let caught_up = status.observed_generation.is_some()
                && status.observed_generation == s.metadata.generation;
            caught_up.then(|| status.update_revision.clone()).flatten()
        });
        let sts = StatefulSetNow {
            replicas,
            claims,
            update_revision,
        };
        let members = replicas.max(self.rc.spec.replicas.max(0) as u32);
        self.kube
            .apply::<PodDisruptionBudget>(
                &names.pod_disruption_budget(),
                &resources::pod_disruption_budget(&self.owned, members),
            )
            .await?;
        self.scale_statefulset(&sts, replicas).await?;
        Ok(sts)
    }

    async fn scale_statefulset(&self, sts: &StatefulSetNow, replicas: u32) -> Result<(), Error> {
        self.kube
            .apply::<StatefulSet>(
                &self.owned.names.statefulset(),
                &resources::statefulset(self.rc, &self.owned, replicas as i32, &sts.claims),
            )
            .await
    }

    /// What the planners decide from: the spec, the StatefulSet's `replicas`
    /// pods, their volumes and what the members report; and the volumes'
    /// sizes, which only the expansion phase needs.
    pub async fn observe(
        &self,
        replicas: u32,
    ) -> Result<(Observed, BTreeMap<u32, ClaimSize>), Error> {
        let status = self.rc.status.clone().unwrap_or_default();
        let learner_waiting_for = status
            .pending_learner
            .as_ref()
            .and_then(|p| p.since.parse::<Timestamp>().ok())
            .and_then(|since| Duration::try_from(self.now.duration_since(since)).ok());
        let claims = self.kube.data_claims().await?;
        let mut observed = Observed {
            desired_replicas: self.rc.spec.replicas.max(1) as u32,
            statefulset_replicas: Some(replicas),
            volumes: claims.keys().copied().collect(),
            initialized: status.initialized.is_some(),
            learner_waiting_for,
            restore_from_backup: self.rc.spec.restore.as_ref().map(|r| r.from_backup.clone()),
            ..Observed::default()
        };
        self.ctx
            .members
            .observe(&self.members, &self.token, 0..replicas)
            .await
            .fill(&mut observed);
        Ok((observed, claims))
    }

    /// Carries out the membership planner's step, unless solo recovery holds
    /// the members; an event says what was done or why it failed.
    pub async fn step_membership(
        &self,
        plan: &Plan,
        observed: &Observed,
        recovery_holds_members: bool,
        sts: &StatefulSetNow,
    ) -> StepRound {
        let Plan::Act(step) = plan else {
            return StepRound::default();
        };
        if recovery_holds_members {
            return StepRound::default();
        }
        let result = match step {
            Step::ScaleStatefulSet { to, .. } => {
                self.scale_statefulset(sts, *to).await.map(|()| None)
            }
            Step::DeleteVolume { ordinal } => {
                self.kube.delete_volume(*ordinal).await.map(|()| None)
            }
            Step::ResetMember { ordinal } => self.kube.reset_member(*ordinal).await.map(|()| None),
            raft => self
                .ctx
                .members
                .execute(&self.members, &self.token, raft, observed)
                .await
                .map(Some)
                .map_err(|source| Error::Step {
                    step: raft.clone(),
                    source,
                }),
        };
        match result {
            Ok(outcome) => {
                if !matches!(outcome, Some(Outcome::NotYet(_))) {
                    self.ctx.metrics.steps.inc();
                    self.kube
                        .publish(EventType::Normal, step_reason(step), format!("{step:?}"))
                        .await;
                }
                StepRound {
                    initialized_cluster_id: match outcome {
                        Some(Outcome::Initialized { cluster_id, .. }) => Some(cluster_id),
                        _ => None,
                    },
                    failure: None,
                }
            }
            Err(err) => {
                self.kube
                    .publish(EventType::Warning, "StepFailed", err.to_string())
                    .await;
                StepRound {
                    initialized_cluster_id: None,
                    failure: Some(err),
                }
            }
        }
    }
}

/// The replica count to re-create a missing StatefulSet at. Before the first
/// member is initialized that is 0 (the planner grows it). Afterwards the
/// StatefulSet was deleted from under a running cluster, and its volumes
/// stayed: re-create it so every member the status records gets its pod and
/// volume back (0 would leave the cluster waiting for a leader that cannot
/// exist, and the planner never grows a cluster without one).
fn replicas_to_recreate(status: Option<&RaftClusterStatus>) -> u32 {
    let Some(status) = status.filter(|s| s.initialized.is_some()) else {
        return 0;
    };
    let recorded = status
        .members
        .iter()
        .filter_map(|m| crate::naming::ordinal_of(m.id))
        .map(|ordinal| ordinal + 1)
        .max()
        .unwrap_or(0);
    recorded
        .max(u32::try_from(status.replicas).unwrap_or(0))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::replicas_to_recreate;
    use crate::crd::{InitializedRecord, MemberSummary, RaftClusterStatus};

    fn member(id: u64, role: &str) -> MemberSummary {
        MemberSummary {
            id,
            name: format!("demo-{}", id - 1),
            role: role.to_string(),
            caught_up: true,
        }
    }

    #[test]
    fn a_missing_statefulset_comes_back_with_every_recorded_member() {
        assert_eq!(replicas_to_recreate(None), 0, "no status: a new cluster");
        let mut status = RaftClusterStatus::default();
        assert_eq!(replicas_to_recreate(Some(&status)), 0, "not initialized");
        status.initialized = Some(InitializedRecord {
            cluster_id: "c1".to_string(),
            cluster_token: "uid".to_string(),
            restored_from: None,
        });
        assert_eq!(replicas_to_recreate(Some(&status)), 1, "member 1 at least");
        status.members = vec![
            member(1, "follower"),
            member(2, "leader"),
            member(3, "learner"),
        ];
        assert_eq!(replicas_to_recreate(Some(&status)), 3);
        status.replicas = 5;
        assert_eq!(
            replicas_to_recreate(Some(&status)),
            5,
            "pods mid-scale keep their volumes too"
        );
    }
}
