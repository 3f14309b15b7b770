//! The space quota (`--quota-backend-bytes`): a write that adds data is
//! refused once the database is over it, and the NOSPACE alarm is raised
//! through the log so every member refuses too (see `store::alarm`).

use std::time::Duration;
use std::time::Instant;

use crate::errors::ApiError;
use crate::proto::raftkvpb;
use crate::raft::Command;

use super::Node;

/// The database's size on disk, measured at most every 250ms (a directory
/// walk per write would cost more than the write).
#[derive(Default)]
pub struct DiskUsage {
    last: std::sync::Mutex<Option<(Instant, u64)>>,
}

impl DiskUsage {
    pub fn get(&self, data_dir: &std::path::Path) -> u64 {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some((at, bytes)) if at.elapsed() < Duration::from_millis(250) => bytes,
            _ => {
                let bytes = crate::store::disk_size(data_dir);
                *last = Some((Instant::now(), bytes));
                bytes
            }
        }
    }

    /// Forget the cached size, so the next check measures again: after a
    /// defragment, a write right behind it must not be judged by the old size.
    pub fn invalidate(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl Node {
    /// Refuse a write that adds data when the space quota is exhausted, raising
    /// the NOSPACE alarm for this member (once) so every member refuses too.
    pub async fn check_quota(&self) -> Result<(), ApiError> {
        if self.disk_usage.get(&self.data_dir) <= self.quota_bytes {
            return Ok(());
        }
        if !crate::store::alarm::space_alarm_raised(&self.db) {
            use crate::proto::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmType};
            let raise = Command::new(raftkvpb::command::Op::Alarm(AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: self.id,
                alarm: AlarmType::Nospace as i32,
            }));
            tracing::warn!(
                quota = self.quota_bytes,
                "space quota exceeded: raising the NOSPACE alarm"
            );
            self.propose(raise).await?;
        }
        Err(crate::store::alarm::no_space())
    }
}
