//! The controller's part of solo recovery: plan from what was observed, carry
//! out the step (Kubernetes resets here, RecoverSolo through the members),
//! and work out the `status.recovery` to write.

use super::{plan_recovery, record, RecoveryInput, RecoveryPlan, RecoveryStep};
use crate::controller::{delete_volume, publish, reset_member, Context, Error, MemberApi};
use crate::crd::{
    RaftCluster, RaftClusterStatus, RecoveryPhase, RecoveryStatus, DEFAULT_LEADERLESS_SECONDS,
};
use crate::membership::Observed;
use crate::naming::ClusterNames;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Pod};
use kube::api::Api;
use kube::runtime::events::{EventType, Recorder};
use std::time::Duration;

/// What one reconcile did about recovery.
pub struct RecoveryRound {
    pub plan: RecoveryPlan,
    /// `status.recovery` to write.
    pub status: Option<RecoveryStatus>,
    /// The step failed (status unchanged; retried).
    pub error: Option<Error>,
}

impl RecoveryRound {
    /// While recovery resets members or runs RecoverSolo, the membership
    /// planner must not act.
    pub fn holds_members(&self) -> bool {
        self.status.as_ref().is_some_and(|s| {
            matches!(
                s.phase,
                RecoveryPhase::ResettingOthers | RecoveryPhase::RecoveringSolo
            )
        }) || matches!(self.plan, RecoveryPlan::Act(_))
    }

    /// Growing back after RecoverSolo: mark Completed once membership
    /// converged. True when this call completed it.
    pub fn complete(&mut self, generation: i64, now: &str) -> bool {
        if !matches!(self.plan, RecoveryPlan::Growing) {
            return false;
        }
        let done = RecoveryPlan::Act(RecoveryStep::Enter(RecoveryPhase::Completed));
        self.status = record(self.status.as_ref(), generation, &done, None, now);
        true
    }
}

/// The leaderless threshold of `spec.recovery.leaderlessSeconds`.
pub fn leaderless_threshold(rc: &RaftCluster) -> Duration {
    let secs = rc
        .spec
        .recovery
        .as_ref()
        .and_then(|r| r.leaderless_seconds)
        .unwrap_or(DEFAULT_LEADERLESS_SECONDS);
    Duration::from_secs(u64::from(secs))
}

/// Voters the operator last saw (recorded in status before quorum was lost).
pub fn known_voters(status: &RaftClusterStatus) -> Vec<u64> {
    status
        .members
        .iter()
        .filter(|m| m.role != "learner")
        .map(|m| m.id)
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub async fn run<M: MemberApi>(
    ctx: &Context<M>,
    rc: &RaftCluster,
    names: &ClusterNames,
    observed: &Observed,
    recorder: &Recorder,
    reference: &ObjectReference,
    pvcs: &Api<PersistentVolumeClaim>,
    pods: &Api<Pod>,
    now: &str,
) -> RecoveryRound {
    let previous = rc.status.clone().unwrap_or_default();
    let generation = rc.metadata.generation.unwrap_or(0);
    let threshold = leaderless_threshold(rc);
    let voters = known_voters(&previous);
    let plan = plan_recovery(&RecoveryInput {
        request: rc.spec.recovery.as_ref().and_then(|r| r.solo.as_ref()),
        generation,
        status: previous.recovery.as_ref(),
        observed,
        known_voters: &voters,
        leaderless_threshold: threshold,
    });
    tracing::info!(cluster = %names.cluster, plan = ?plan, "recovery planned");
    let result: Result<Option<String>, Error> = match &plan {
        RecoveryPlan::Act(RecoveryStep::ResetMember { ordinal }) => {
            reset_member(pvcs, pods, names, *ordinal)
                .await
                .map(|()| None)
        }
        RecoveryPlan::Act(RecoveryStep::DeleteVolume { ordinal }) => {
            delete_volume(pvcs, names, *ordinal).await.map(|()| None)
        }
        RecoveryPlan::Act(RecoveryStep::RecoverSolo { ordinal }) => ctx
            .members
            .recover_solo(names, *ordinal, threshold)
            .await
            .map(|r| {
                Some(format!(
                    "pod ordinal {ordinal} recovered alone in epoch {}: kept applied index {}, \
                     revision {}, {} keys. {}",
                    r.epoch, r.last_applied_index, r.revision, r.key_count, r.report
                ))
            })
            .map_err(|source| Error::Recovery { source }),
        _ => Ok(None),
    };
    match result {
        Ok(detail) => {
            let status = record(previous.recovery.as_ref(), generation, &plan, detail, now);
            if status != previous.recovery {
                if let Some(s) = &status {
                    let type_ = if s.phase == RecoveryPhase::Refused {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    };
                    publish(
                        recorder,
                        reference,
                        type_,
                        "SoloRecovery",
                        format!("{:?}: {}", s.phase, s.message),
                    )
                    .await;
                }
            } else if let RecoveryPlan::Act(step) = &plan {
                publish(
                    recorder,
                    reference,
                    EventType::Normal,
                    "SoloRecovery",
                    format!("{step:?}"),
                )
                .await;
            }
            RecoveryRound {
                plan,
                status,
                error: None,
            }
        }
        Err(err) => {
            publish(
                recorder,
                reference,
                EventType::Warning,
                "SoloRecoveryStepFailed",
                err.to_string(),
            )
            .await;
            RecoveryRound {
                plan,
                status: previous.recovery.clone(),
                error: Some(err),
            }
        }
    }
}
