//! Scheduled backups' file names: one name per scheduled instant, so names
//! sort by time and a retried attempt writes the same file. When a backup is
//! due is [`crate::cron`]'s.

use chrono::{DateTime, Utc};

pub use crate::cron::{Schedule, ScheduleError};

/// The backup file name for a scheduled instant: `<cluster>-<UTC
/// yyyymmddThhmmssZ>.snap`, so names sort by time and a retried attempt for
/// the same instant writes the same name.
pub fn backup_file_name(cluster: &str, instant: DateTime<Utc>) -> String {
    format!("{cluster}-{}.snap", instant.format("%Y%m%dT%H%M%SZ"))
}

/// Whether `file` is one of this cluster's scheduled backups (so retention
/// never deletes a file someone else put there).
pub fn is_scheduled_backup_of(cluster: &str, file: &str) -> bool {
    file.strip_prefix(cluster)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.strip_suffix(".snap"))
        .is_some_and(|stamp| {
            stamp.len() == 16
                && stamp.ends_with('Z')
                && stamp.as_bytes()[8] == b'T'
                && stamp
                    .bytes()
                    .enumerate()
                    .all(|(i, b)| i == 8 || i == 15 || b.is_ascii_digit())
        })
}
