//! The maintenance phase of a reconcile: plan from the schedules and the
//! clock ([`crate::maintenance`]'s pure planner), carry out its one step
//! (a compaction, or one member's defragmentation), and record it in
//! `status.maintenance`, with an event for each step.

use super::reconciler::Reconciler;
use crate::crd::{DefragmentationRound, LastCompaction, MaintenanceStatus};
use crate::maintenance::{plan_maintenance, MaintenanceInput, MaintenancePlan};
use crate::members::MemberApi;
use crate::membership::Observed;
use crate::snapshots::rfc3339;
use kube::runtime::events::EventType;
use std::time::Duration;

/// A step that could not be taken is tried again this soon.
const RETRY: Duration = Duration::from_secs(10);
/// While a defragmentation round runs: the next member.
const NEXT_STEP: Duration = Duration::from_secs(2);

/// What one reconcile did about maintenance.
pub struct MaintenanceRound {
    /// `status.maintenance` to write.
    pub status: Option<MaintenanceStatus>,
    /// When to look again for it.
    pub next_in: Option<Duration>,
}

impl<M: MemberApi> Reconciler<'_, M> {
    /// Takes the maintenance step due, if any (none while solo recovery
    /// holds the members).
    pub async fn maintain(&self, observed: &Observed, recovering: bool) -> MaintenanceRound {
        let rc = self.rc;
        let previous = rc.status.as_ref().and_then(|s| s.maintenance.clone());
        let Some(spec) = rc.spec.maintenance.as_ref().filter(|_| !recovering) else {
            return MaintenanceRound {
                status: previous,
                next_in: None,
            };
        };
        let (now, created) = self.schedule_clock();
        let plan = plan_maintenance(&MaintenanceInput {
            spec,
            status: previous.as_ref(),
            created,
            now,
            reports: &observed.reports,
        });
        let mut status = previous.clone().unwrap_or_default();
        let next_in = match plan {
            MaintenancePlan::Invalid(err) => {
                self.kube
                    .publish(
                        EventType::Warning,
                        "InvalidMaintenanceSchedule",
                        err.to_string(),
                    )
                    .await;
                None
            }
            MaintenancePlan::Idle { next } => next.and_then(|n| (n - now).to_std().ok()),
            MaintenancePlan::Wait(why) => {
                tracing::info!(cluster = %self.owned.names.cluster, "{why}");
                Some(RETRY)
            }
            MaintenancePlan::Compact {
                due,
                leader,
                retain,
            } => match self
                .ctx
                .members
                .compact(&self.members, leader, retain)
                .await
            {
                Ok(revision) => {
                    status.last_compaction = Some(LastCompaction {
                        scheduled_time: rfc3339(due),
                        time: rfc3339(now),
                        revision,
                    });
                    let note = match revision {
                        0 => format!("nothing to compact: {retain} revisions or fewer so far"),
                        r => format!("history before revision {r} discarded, the newest {retain} revisions kept"),
                    };
                    self.kube
                        .publish(EventType::Normal, "Compacted", note)
                        .await;
                    Some(NEXT_STEP)
                }
                Err(e) => {
                    let note = format!(
                        "compaction through pod {}: {e}",
                        self.owned.names.pod(leader)
                    );
                    self.kube
                        .publish(EventType::Warning, "CompactionFailed", note)
                        .await;
                    Some(RETRY)
                }
            },
            MaintenancePlan::Defragment {
                due,
                ordinal,
                mut done,
            } => {
                let pod = self.owned.names.pod(ordinal);
                let result = self.ctx.members.defragment(&self.members, ordinal).await;
                let next = match &result {
                    Ok(()) => {
                        done.push(ordinal);
                        let note = format!("{pod} defragmented ({} this round)", done.len());
                        self.kube
                            .publish(EventType::Normal, "Defragmented", note)
                            .await;
                        NEXT_STEP
                    }
                    Err(e) => {
                        let note = format!("defragmenting {pod}: {e}");
                        self.kube
                            .publish(EventType::Warning, "DefragmentationFailed", note)
                            .await;
                        RETRY
                    }
                };
                status.defragmentation = Some(DefragmentationRound {
                    scheduled_time: rfc3339(due),
                    done,
                    completed_time: None,
                });
                Some(next)
            }
            MaintenancePlan::FinishDefragmentation { due, done } => {
                let note = format!("every member defragmented: pods {done:?}");
                status.defragmentation = Some(DefragmentationRound {
                    scheduled_time: rfc3339(due),
                    done,
                    completed_time: Some(rfc3339(now)),
                });
                self.kube
                    .publish(EventType::Normal, "DefragmentationDone", note)
                    .await;
                Some(NEXT_STEP)
            }
        };
        MaintenanceRound {
            status: (status != MaintenanceStatus::default()).then_some(status),
            next_in,
        }
    }
}
