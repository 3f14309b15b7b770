//! The controller's part of scheduled backups: plan from the schedule and the
//! injected clock, take the backup through the members, work out
//! `status.lastSnapshot` and the BackupSucceeded condition.

use super::{last_snapshot, plan_backup, BackupInput, BackupOutcome, BackupPlan, CONDITION};
use crate::controller::{publish, Context, MemberApi};
use crate::crd::{LastSnapshot, RaftCluster};
use crate::membership::Observed;
use crate::naming::ClusterNames;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{EventType, Recorder};
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

#[allow(clippy::too_many_arguments)]
pub async fn run<M: MemberApi>(
    ctx: &Context<M>,
    rc: &RaftCluster,
    names: &ClusterNames,
    observed: &Observed,
    recovering: bool,
    recorder: &Recorder,
    reference: &ObjectReference,
    now: DateTime<Utc>,
) -> BackupRound {
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
    let created = rc
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| DateTime::from_timestamp_millis(t.0.as_millisecond()))
        .unwrap_or(now);
    let plan = plan_backup(&BackupInput {
        cluster: &names.cluster,
        spec,
        last: last.as_ref(),
        created,
        now,
        reports: &observed.reports,
    });
    // The next instant, to requeue for it (also after a backup just taken).
    let next_in = super::Schedule::parse(&spec.schedule, spec.time_zone.as_deref())
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
                publish(
                    recorder,
                    reference,
                    EventType::Warning,
                    "InvalidSchedule",
                    err.to_string(),
                )
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
            match ctx
                .members
                .take_backup(names, &take, spec.retain, ordinals)
                .await
            {
                Ok(done) => {
                    let taken = last_snapshot(&take, &done, names.pod(take.ordinal), now);
                    publish(
                        recorder,
                        reference,
                        EventType::Normal,
                        "BackupTaken",
                        format!(
                            "{} on {} (revision {}, {} bytes); pruned {:?}",
                            taken.file, taken.member, taken.revision, taken.size_bytes, done.pruned
                        ),
                    )
                    .await;
                    if !done.prune_errors.is_empty() {
                        publish(
                            recorder,
                            reference,
                            EventType::Warning,
                            "BackupPruneFailed",
                            done.prune_errors.join("; "),
                        )
                        .await;
                    }
                    BackupRound {
                        outcome: BackupOutcome::Taken(taken.clone()),
                        last: Some(taken),
                        next_in,
                    }
                }
                Err(err) => {
                    let message =
                        format!("{} on {}: {err}", take.file_name, names.pod(take.ordinal));
                    publish(
                        recorder,
                        reference,
                        EventType::Warning,
                        "BackupFailed",
                        message.clone(),
                    )
                    .await;
                    BackupRound {
                        outcome: BackupOutcome::Failed(message),
                        last,
                        next_in: retry_in,
                    }
                }
            }
        }
    }
}
