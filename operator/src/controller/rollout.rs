//! The rollout phase of a reconcile: when the StatefulSet's template changed,
//! restart one member pod (or first move leadership off it), as
//! [`crate::rollout`]'s pure planner decides. The StatefulSet's `OnDelete`
//! strategy leaves every restart to this phase.

use super::reconciler::{Reconciler, StatefulSetNow};
use crate::members::MemberApi;
use crate::membership::{Observed, Plan};
use crate::rollout::{plan_rollout, RestartReason, RolloutInput, RolloutPlan};
use crate::Error;
use kube::runtime::events::EventType;

/// What the rollout phase of one reconcile decided and did.
pub struct RolloutRound {
    /// `None` when the pods could not be listed.
    pub plan: Option<RolloutPlan>,
    /// Listing the pods or carrying out the step failed (reported; retried).
    pub error: Option<Error>,
}

impl<M: MemberApi> Reconciler<'_, M> {
    /// Restarts at most one pod that runs an old template, or moves
    /// leadership off the last one.
    pub async fn roll_out(
        &self,
        sts: &StatefulSetNow,
        observed: &Observed,
        membership: &Plan,
        recovery_holds_members: bool,
    ) -> RolloutRound {
        let Some(update_revision) = sts.update_revision.as_deref() else {
            return RolloutRound {
                plan: Some(RolloutPlan::UpToDate),
                error: None,
            };
        };
        let pods = match self.kube.member_pods(self.now).await {
            Ok(pods) => pods,
            Err(err) => {
                return RolloutRound {
                    plan: None,
                    error: Some(err),
                }
            }
        };
        let plan = plan_rollout(&RolloutInput {
            update_revision: Some(update_revision),
            replicas: sts.replicas,
            pods,
            observed,
            membership,
            recovery_holds_members,
        });
        let error = match &plan {
            RolloutPlan::Restart { ordinal, reason } => {
                let why = match reason {
                    RestartReason::Unhealthy => "not Ready",
                    RestartReason::Outdated => "every other voter serves",
                };
                let note = format!("restarting pod ordinal {ordinal} on the new template ({why})");
                self.kube
                    .publish(EventType::Normal, "RestartingMember", note)
                    .await;
                self.kube.delete_pod(*ordinal).await.err()
            }
            RolloutPlan::MoveLeader { from, to } => {
                let note = format!(
                    "moving leadership from pod ordinal {from} to member {to} before restarting it"
                );
                self.kube
                    .publish(EventType::Normal, "MovingLeader", note)
                    .await;
                self.ctx
                    .members
                    .move_leader(&self.members, *from, *to)
                    .await
                    .err()
                    .map(|source| Error::MoveLeader {
                        from: *from,
                        to: *to,
                        source,
                    })
            }
            RolloutPlan::UpToDate | RolloutPlan::Wait(_) => None,
        };
        if let Some(err) = &error {
            self.kube
                .publish(EventType::Warning, "RolloutStepFailed", err.to_string())
                .await;
        }
        RolloutRound {
            plan: Some(plan),
            error,
        }
    }
}
