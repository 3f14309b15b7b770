//! Scheduled backups of a RaftCluster: when one is due ([`schedule`]), who
//! takes it and what retention deletes ([`planner`], pure), the member calls
//! ([`executor`]), and how the result shows in status (here).

pub mod executor;
pub mod planner;
pub mod schedule;

pub use executor::BackupDone;
pub use planner::{plan_backup, plan_pruning, BackupInput, BackupPlan, TakeBackup};
pub use schedule::{backup_file_name, Schedule, ScheduleError};

use crate::crd::LastSnapshot;
use chrono::{DateTime, SecondsFormat, Utc};

/// The condition type reporting scheduled backups.
pub const CONDITION: &str = "BackupSucceeded";

/// RFC 3339 in UTC, seconds precision, as status records times.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `status.lastSnapshot` for a backup just taken by pod `member`.
pub fn last_snapshot(
    take: &TakeBackup,
    done: &BackupDone,
    member: String,
    now: DateTime<Utc>,
) -> LastSnapshot {
    LastSnapshot {
        time: rfc3339(now),
        scheduled_time: rfc3339(take.due),
        revision: done.info.revision,
        size_bytes: done.info.size_bytes,
        member,
        file: if done.info.file_name.is_empty() {
            take.file_name.clone()
        } else {
            done.info.file_name.clone()
        },
    }
}

/// What this reconcile did about backups, for the condition and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupOutcome {
    /// No `spec.snapshot`.
    NotConfigured,
    /// Nothing due (or recovery in progress): the condition stays as it was.
    Unchanged,
    Invalid(String),
    NoHealthyMember {
        due: DateTime<Utc>,
    },
    Failed(String),
    Taken(LastSnapshot),
}

/// The BackupSucceeded condition for `outcome`: `Some((status, reason,
/// message))` to set, `None` to keep the previous one (or drop it, when not
/// configured: the controller tells these apart).
pub fn condition(outcome: &BackupOutcome) -> Option<(bool, &'static str, String)> {
    match outcome {
        BackupOutcome::NotConfigured | BackupOutcome::Unchanged => None,
        BackupOutcome::Invalid(why) => Some((false, "InvalidSchedule", why.clone())),
        BackupOutcome::NoHealthyMember { due } => Some((
            false,
            "NoHealthyMember",
            format!("backup due at {} waits for a ready member", rfc3339(*due)),
        )),
        BackupOutcome::Failed(why) => Some((false, "BackupFailed", why.clone())),
        BackupOutcome::Taken(s) => Some((
            true,
            "BackupTaken",
            format!(
                "{} on {}: revision {}, {} bytes",
                s.file, s.member, s.revision, s.size_bytes
            ),
        )),
    }
}
