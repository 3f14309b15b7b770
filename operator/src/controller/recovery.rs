//! The solo-recovery phase of a reconcile: plan from what was observed
//! ([`crate::recovery`]'s pure planner), carry out the step (Kubernetes resets
//! here, RecoverSolo through the members), and work out the `status.recovery`
//! to write. It runs before the membership step: while it resets members or
//! runs RecoverSolo, it owns them and the membership planner waits.

use super::reconciler::Reconciler;
use crate::crd::{
    RaftCluster, RaftClusterStatus, RecoveryPhase, RecoveryStatus, DEFAULT_LEADERLESS_SECONDS,
};
use crate::members::MemberApi;
use crate::membership::{Observed, Plan};
use crate::recovery::{plan_recovery, record, RecoveryInput, RecoveryPlan, RecoveryStep};
use crate::Error;
use kube::runtime::events::EventType;
use std::collections::BTreeMap;
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

impl<M: MemberApi> Reconciler<'_, M> {
    /// Plans and carries out this reconcile's solo-recovery step, if any, and
    /// says so in an event.
    pub async fn recover(&self, observed: &Observed) -> RecoveryRound {
        let rc = self.rc;
        let previous = rc.status.clone().unwrap_or_default();
        let generation = rc.metadata.generation.unwrap_or(0);
        let threshold = leaderless_threshold(rc);
        let voters = known_voters(&previous);
        // Kubernetes' view of the pods matters only to a request's proof of
        // loss: listed only while one is in the spec.
        let requested = rc.spec.recovery.as_ref().is_some_and(|r| r.solo.is_some());
        let pods = if requested {
            match self.kube.member_pods(self.now).await {
                Ok(pods) => pods,
                Err(err) => {
                    return RecoveryRound {
                        plan: RecoveryPlan::Idle,
                        status: previous.recovery.clone(),
                        error: Some(err),
                    }
                }
            }
        } else {
            BTreeMap::new()
        };
        let plan = plan_recovery(&RecoveryInput {
            request: rc.spec.recovery.as_ref().and_then(|r| r.solo.as_ref()),
            generation,
            status: previous.recovery.as_ref(),
            observed,
            known_voters: &voters,
            leaderless_threshold: threshold,
            pods: &pods,
        });
        tracing::info!(cluster = %self.owned.names.cluster, plan = ?plan, "recovery planned");
        match self.take_recovery_step(&plan, threshold).await {
            Ok(detail) => {
                let now = self.now.to_string();
                let status = record(previous.recovery.as_ref(), generation, &plan, detail, &now);
                if status != previous.recovery {
                    if let Some(s) = &status {
                        let type_ = if s.phase == RecoveryPhase::Refused {
                            EventType::Warning
                        } else {
                            EventType::Normal
                        };
                        let note = format!("{:?}: {}", s.phase, s.message);
                        self.kube.publish(type_, "SoloRecovery", note).await;
                    }
                } else if let RecoveryPlan::Act(step) = &plan {
                    let note = format!("{step:?}");
                    self.kube
                        .publish(EventType::Normal, "SoloRecovery", note)
                        .await;
                }
                RecoveryRound {
                    plan,
                    status,
                    error: None,
                }
            }
            Err(err) => {
                let note = err.to_string();
                self.kube
                    .publish(EventType::Warning, "SoloRecoveryStepFailed", note)
                    .await;
                RecoveryRound {
                    plan,
                    status: previous.recovery.clone(),
                    error: Some(err),
                }
            }
        }
    }

    /// The call a recovery step makes; for RecoverSolo, what the member said.
    async fn take_recovery_step(
        &self,
        plan: &RecoveryPlan,
        threshold: Duration,
    ) -> Result<Option<String>, Error> {
        match plan {
            RecoveryPlan::Act(RecoveryStep::ResetMember { ordinal }) => {
                self.kube.reset_member(*ordinal).await.map(|()| None)
            }
            RecoveryPlan::Act(RecoveryStep::DeleteVolume { ordinal }) => {
                self.kube.delete_volume(*ordinal).await.map(|()| None)
            }
            RecoveryPlan::Act(RecoveryStep::RecoverSolo { ordinal }) => self
                .ctx
                .members
                .recover_solo(&self.members, *ordinal, threshold)
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
        }
    }

    /// Growing back after RecoverSolo ends once membership converged: the
    /// recovery is Completed, and an event says so.
    pub async fn finish_recovery(&self, plan: &Plan, recovery: &mut RecoveryRound) {
        if *plan != Plan::Converged || recovery.holds_members() {
            return;
        }
        let generation = self.rc.metadata.generation.unwrap_or(0);
        if recovery.complete(generation, &self.now.to_string()) {
            let note = "Completed: back to spec.replicas members".to_string();
            self.kube
                .publish(EventType::Normal, "SoloRecovery", note)
                .await;
        }
    }
}
