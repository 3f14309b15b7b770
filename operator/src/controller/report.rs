//! What users see of a reconcile: the status it writes (conditions included),
//! and, when the API server refused a call, a `ReconcileFailed` condition and
//! a Warning event instead of only a line in the operator's log.

use super::backups::BackupRound;
use super::context::Context;
use super::kube_ops::publish;
use super::maintenance::MaintenanceRound;
use super::reconciler::{Reconciler, StepRound};
use super::recovery::RecoveryRound;
use super::rollout::RolloutRound;
use super::volumes::ExpansionRound;
use crate::crd::RaftCluster;
use crate::members::MemberApi;
use crate::membership::{Observed, Plan};
use crate::status::{
    build_status, with_reconcile_failure, ExtraCondition, StatusInput, RECONCILE_FAILED,
};
use crate::Error;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{EventType, Recorder};
use kube::{Resource, ResourceExt};

/// What the phases of one reconcile did, for status.
pub struct Rounds<'r> {
    pub step: &'r StepRound,
    pub recovery: &'r RecoveryRound,
    pub rollout: &'r RolloutRound,
    pub expansion: &'r ExpansionRound,
    pub backups: &'r BackupRound,
    pub maintenance: &'r MaintenanceRound,
}

impl<M: MemberApi> Reconciler<'_, M> {
    /// Writes what this reconcile observed and did into status.
    pub async fn write_status(
        &self,
        observed: &Observed,
        plan: &Plan,
        rounds: &Rounds<'_>,
    ) -> Result<(), Error> {
        let rc = self.rc;
        let Rounds {
            step,
            recovery,
            rollout,
            expansion,
            backups,
            maintenance,
        } = *rounds;
        let step_error = step
            .failure
            .as_ref()
            .or(recovery.error.as_ref())
            .or(rollout.error.as_ref())
            .map(|e| e.to_string());
        let recovery_condition = crate::recovery::condition(
            rc.spec.recovery.as_ref().is_some_and(|r| r.solo.is_some()),
            recovery.status.as_ref(),
            &recovery.plan,
        );
        let status = build_status(&StatusInput {
            rc,
            names: &self.owned.names,
            observed,
            plan,
            step_error,
            initialized_cluster_id: step.initialized_cluster_id,
            now: self.now,
            recovery: recovery.status.clone(),
            last_snapshot: backups.last.clone(),
            maintenance: maintenance.status.clone(),
            extra_conditions: vec![
                ExtraCondition {
                    type_: crate::snapshots::CONDITION,
                    configured: rc.spec.snapshot.is_some(),
                    set: crate::snapshots::condition(&backups.outcome)
                        .map(|(ok, reason, message)| (ok, reason.to_string(), message)),
                },
                ExtraCondition {
                    type_: crate::recovery::CONDITION,
                    configured: recovery_condition.is_some(),
                    set: recovery_condition,
                },
                ExtraCondition {
                    type_: crate::rollout::CONDITION,
                    configured: true,
                    // Unknown when the pods could not be listed: kept as it was.
                    set: rollout.plan.as_ref().map(|plan| {
                        let (ok, reason, message) = crate::rollout::condition(plan);
                        (ok, reason.to_string(), message)
                    }),
                },
                ExtraCondition {
                    type_: crate::volumes::CONDITION,
                    configured: true,
                    set: Some({
                        let (ok, reason, message) = &expansion.condition;
                        (*ok, reason.to_string(), message.clone())
                    }),
                },
            ],
        });
        self.kube
            .write_status(
                rc.status.as_ref(),
                &status,
                rc.metadata.resource_version.as_deref(),
            )
            .await
    }
}

/// A reconcile the API server refused stops before status is computed; say
/// so where users look. Best effort: reporting must not hide the error itself.
pub async fn report_failure<M: MemberApi>(rc: &RaftCluster, ctx: &Context<M>, err: &Error) {
    let Error::Kube { source, .. } = err else {
        return;
    };
    let reason = match source {
        kube::Error::Api(status) if !status.reason.is_empty() => status.reason.clone(),
        _ => "KubernetesApiError".to_string(),
    };
    let previous = rc
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let conditions = with_reconcile_failure(
        &previous,
        &reason,
        err.to_string(),
        rc.metadata.generation,
        Timestamp::now(),
    );
    let ns = rc.namespace().unwrap_or_else(|| "default".to_string());
    let api: Api<RaftCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({ "status": { "conditions": conditions } });
    if let Err(e) = api
        .patch_status(
            &rc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        tracing::warn!(error = %e, "writing the ReconcileFailed condition failed");
    }
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    publish(
        &recorder,
        &rc.object_ref(&()),
        EventType::Warning,
        RECONCILE_FAILED,
        err.to_string(),
    )
    .await;
}
