//! The backup phase of a reconcile: plan from the schedule and the clock
//! ([`crate::snapshots`]'s pure planner), take the backup through the members,
//! work out `status.lastSnapshot` and the BackupSucceeded condition.

use super::reconciler::Reconciler;
use crate::crd::LastSnapshot;
use crate::members::MemberApi;
use crate::membership::Observed;
use crate::snapshots::{
    last_snapshot, plan_backup, BackupInput, BackupOutcome, BackupPlan, Schedule, TakeBackup,
    CONDITION,
};
use chrono::{DateTime, Utc};
use kube::runtime::events::EventType;
use std::time::Duration;

/// A backup that is owed but failed or found no ready member is retried this soon.
const RETRY: Duration = Duration::from_secs(10);

/// What one reconcile did about backups.
pub struct BackupRound {
    pub outcome: BackupOutcome,
    /// `status.lastSnapshot` to write.
    pub last: Option<LastSnapshot>,
    /// Until the next scheduled instant, to requeue for it.
    pub next_in: Option<Duration>,
}

impl<M: MemberApi> Reconciler<'_, M> {
    /// Takes the backup the schedule owes, if any (none while solo recovery
    /// is under way), and prunes beyond `retain`.
    pub async fn back_up(&self, observed: &Observed, recovering: bool) -> BackupRound {
        let rc = self.rc;
        let (now, created) = self.schedule_clock();
        let previous = rc.status.clone().unwrap_or_default();
        let last = previous.last_snapshot.clone();
        let Some(spec) = rc.spec.snapshot.as_ref() else {
            return BackupRound {
                outcome: BackupOutcome::NotConfigured,
                last,
                next_in: None,
            };
        };
        if recovering {
            return BackupRound {
                outcome: BackupOutcome::Unchanged,
                last,
                next_in: None,
            };
        }
        let plan = plan_backup(&BackupInput {
            cluster: &self.owned.names.cluster,
            spec,
            last: last.as_ref(),
            created,
            now,
            reports: &observed.reports,
        });
        // The next instant, to requeue for it (also after a backup just taken).
        let next_in = Schedule::parse(&spec.schedule, spec.time_zone.as_deref())
            .ok()
            .and_then(|s| s.next_after(now))
            .and_then(|n| (n - now).to_std().ok());
        let retry_in = Some(next_in.map_or(RETRY, |n| n.min(RETRY)));
        let previous_reason = previous
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION)
            .map(|c| c.reason.clone());
        match plan {
            BackupPlan::Idle { .. } => BackupRound {
                outcome: BackupOutcome::Unchanged,
                last,
                next_in,
            },
            BackupPlan::Invalid(err) => {
                if previous_reason.as_deref() != Some("InvalidSchedule") {
                    self.kube
                        .publish(EventType::Warning, "InvalidSchedule", err.to_string())
                        .await;
                }
                BackupRound {
                    outcome: BackupOutcome::Invalid(err.to_string()),
                    last,
                    next_in: None,
                }
            }
            BackupPlan::NoHealthyMember { due } => BackupRound {
                outcome: BackupOutcome::NoHealthyMember { due },
                last,
                next_in: retry_in,
            },
            BackupPlan::Take(take) => {
                let ordinals = observed.reports.keys().copied().collect();
                match self.take_backup(&take, spec.retain, ordinals, now).await {
                    Ok(taken) => BackupRound {
                        outcome: BackupOutcome::Taken(taken.clone()),
                        last: Some(taken),
                        next_in,
                    },
                    Err(message) => BackupRound {
                        outcome: BackupOutcome::Failed(message),
                        last,
                        next_in: retry_in,
                    },
                }
            }
        }
    }

    /// SaveBackup and retention through the members; events say what
    /// happened. The error is the message for status.
    async fn take_backup(
        &self,
        take: &TakeBackup,
        retain: u32,
        ordinals: Vec<u32>,
        now: DateTime<Utc>,
    ) -> Result<LastSnapshot, String> {
        let names = &self.owned.names;
        match self
            .ctx
            .members
            .take_backup(&self.members, take, retain, ordinals)
            .await
        {
            Ok(done) => {
                let taken = last_snapshot(take, &done, names.pod(take.ordinal), now);
                let note = format!(
                    "{} on {} (revision {}, {} bytes); pruned {:?}",
                    taken.file, taken.member, taken.revision, taken.size_bytes, done.pruned
                );
                self.kube
                    .publish(EventType::Normal, "BackupTaken", note)
                    .await;
                if !done.prune_errors.is_empty() {
                    let note = done.prune_errors.join("; ");
                    self.kube
                        .publish(EventType::Warning, "BackupPruneFailed", note)
                        .await;
                }
                Ok(taken)
            }
            Err(err) => {
                let message = format!("{} on {}: {err}", take.file_name, names.pod(take.ordinal));
                self.kube
                    .publish(EventType::Warning, "BackupFailed", message.clone())
                    .await;
                Err(message)
            }
        }
    }
}
