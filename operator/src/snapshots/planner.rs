//! The backup planner: from the schedule, what was last backed up, the
//! members' reports and an injected `now`, whether to take a backup now, from
//! which member, under which name; and, from the members' backup listings,
//! which old backups retention deletes. Pure, so every case is a table row.

use super::schedule::{backup_file_name, is_scheduled_backup_of, Schedule, ScheduleError};
use crate::crd::{LastSnapshot, SnapshotSpec};
use crate::membership::{MemberReport, Role};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};

/// What the backup planner decides from.
#[derive(Debug, Clone)]
pub struct BackupInput<'a> {
    /// The RaftCluster's name (the backup file prefix).
    pub cluster: &'a str,
    pub spec: &'a SnapshotSpec,
    /// `status.lastSnapshot`.
    pub last: Option<&'a LastSnapshot>,
    /// When the RaftCluster was created: no backup is owed for instants before it.
    pub created: DateTime<Utc>,
    pub now: DateTime<Utc>,
    /// Reports by pod ordinal of the members that answered.
    pub reports: &'a BTreeMap<u32, MemberReport>,
}

/// A backup to take now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeBackup {
    /// The scheduled instant it stands for.
    pub due: DateTime<Utc>,
    pub ordinal: u32,
    pub file_name: String,
}

/// The backup planner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupPlan {
    /// The schedule or time zone is unusable.
    Invalid(ScheduleError),
    /// Nothing due; the next instant (to requeue for).
    Idle {
        next: Option<DateTime<Utc>>,
    },
    /// Due, but no member is ready to write it; retried on the next reconcile.
    NoHealthyMember {
        due: DateTime<Utc>,
    },
    Take(TakeBackup),
}

/// Decide whether a backup is due now and who writes it.
pub fn plan_backup(input: &BackupInput<'_>) -> BackupPlan {
    let schedule = match Schedule::parse(&input.spec.schedule, input.spec.time_zone.as_deref()) {
        Ok(s) => s,
        Err(e) => return BackupPlan::Invalid(e),
    };
    let handled = input
        .last
        .and_then(|l| DateTime::parse_from_rfc3339(&l.scheduled_time).ok())
        .map(|t| t.with_timezone(&Utc));
    let Some(due) = schedule.due(handled, input.created, input.now) else {
        return BackupPlan::Idle {
            next: schedule.next_after(input.now),
        };
    };
    match backup_member(input.reports) {
        Some(ordinal) => BackupPlan::Take(TakeBackup {
            due,
            ordinal,
            file_name: backup_file_name(input.cluster, due),
        }),
        None => BackupPlan::NoHealthyMember { due },
    }
}

/// A ready member, a follower before the leader (a backup reads the whole
/// store; the leader has the most other work), lowest ordinal first.
pub fn backup_member(reports: &BTreeMap<u32, MemberReport>) -> Option<u32> {
    let ready = |r: &&MemberReport| r.is_ready() && r.cluster_id != 0 && r.leader != 0;
    reports
        .iter()
        .filter(|(_, r)| ready(r))
        .min_by_key(|(&ord, r)| (r.role == Role::Leader, ord))
        .map(|(&ord, _)| ord)
}

/// The backups retention deletes, as (ordinal holding it, file name): every
/// scheduled backup of `cluster` older than the newest `retain` names, from
/// every member that lists it. Other files are never touched.
pub fn plan_pruning(
    cluster: &str,
    retain: u32,
    listings: &BTreeMap<u32, Vec<String>>,
) -> Vec<(u32, String)> {
    let names: BTreeSet<&str> = listings
        .values()
        .flatten()
        .map(String::as_str)
        .filter(|f| is_scheduled_backup_of(cluster, f))
        .collect();
    let keep: BTreeSet<&str> = names
        .iter()
        .rev()
        .take(retain.max(1) as usize)
        .copied()
        .collect();
    listings
        .iter()
        .flat_map(|(&ord, files)| {
            files
                .iter()
                .filter(|f| names.contains(f.as_str()) && !keep.contains(f.as_str()))
                .map(move |f| (ord, f.clone()))
        })
        .collect()
}
