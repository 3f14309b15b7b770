//! Carries out the backup planner's decisions through the members' Admin
//! service: SaveBackup on the chosen member, ListBackups on every reachable
//! member, DeleteBackup for what retention drops.
//!
//! Repeats are harmless: a retried SaveBackup for the same scheduled instant
//! uses the same file name, and a DeleteBackup of a file already gone (another
//! member sharing the backup volume deleted it) counts as done.

use super::planner::{plan_pruning, TakeBackup};
use crate::membership::admin::{
    BackupInfo, DeleteBackupRequest, ListBackupsRequest, SaveBackupRequest,
};
use crate::membership::executor::{ExecError, Executor, MemberAddresses};
use std::collections::BTreeMap;

/// What one scheduled backup achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupDone {
    pub ordinal: u32,
    pub info: BackupInfo,
    /// (ordinal, file) deleted by retention.
    pub pruned: Vec<(u32, String)>,
    /// Retention deletes that failed (the backup itself succeeded).
    pub prune_errors: Vec<String>,
}

impl<A: MemberAddresses> Executor<A> {
    /// Admin.SaveBackup on the member at `ordinal`. A file of that name
    /// already there was written by an earlier attempt for the same scheduled
    /// instant (the operator crashed before recording it): that counts as done,
    /// described by the member's listing.
    pub async fn save_backup(
        &self,
        ordinal: u32,
        file_name: &str,
    ) -> Result<BackupInfo, ExecError> {
        let (mut admin, endpoint) = self.admin(ordinal).await?;
        let answer = admin
            .save_backup(SaveBackupRequest {
                file_name: file_name.to_string(),
            })
            .await;
        let response = match answer {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::AlreadyExists => {
                let listed = self.list_backups(ordinal).await?;
                return Ok(listed
                    .into_iter()
                    .find(|b| b.file_name == file_name)
                    .unwrap_or_else(|| BackupInfo {
                        file_name: file_name.to_string(),
                        ..BackupInfo::default()
                    }));
            }
            Err(status) => {
                return Err(ExecError::Admin {
                    call: "SaveBackup",
                    endpoint,
                    status,
                })
            }
        };
        Ok(response.backup.unwrap_or_else(|| BackupInfo {
            file_name: file_name.to_string(),
            ..BackupInfo::default()
        }))
    }

    /// Admin.ListBackups on the member at `ordinal`.
    pub async fn list_backups(&self, ordinal: u32) -> Result<Vec<BackupInfo>, ExecError> {
        let (mut admin, endpoint) = self.admin(ordinal).await?;
        Ok(admin
            .list_backups(ListBackupsRequest {})
            .await
            .map_err(|status| ExecError::Admin {
                call: "ListBackups",
                endpoint,
                status,
            })?
            .into_inner()
            .backups)
    }

    /// Admin.DeleteBackup on the member at `ordinal`; a file already gone is done.
    pub async fn delete_backup(&self, ordinal: u32, file_name: &str) -> Result<(), ExecError> {
        let (mut admin, endpoint) = self.admin(ordinal).await?;
        match admin
            .delete_backup(DeleteBackupRequest {
                file_name: file_name.to_string(),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(ExecError::Admin {
                call: "DeleteBackup",
                endpoint,
                status,
            }),
        }
    }

    /// Take `take`, then apply retention over the listings of `ordinals` (the
    /// members that answered). The backup counts as taken even if pruning
    /// fails; pruning is retried after the next backup.
    pub async fn take_backup(
        &self,
        take: &TakeBackup,
        cluster: &str,
        retain: u32,
        ordinals: impl IntoIterator<Item = u32>,
    ) -> Result<BackupDone, ExecError> {
        let info = self.save_backup(take.ordinal, &take.file_name).await?;
        let mut listings = BTreeMap::new();
        let mut prune_errors = Vec::new();
        for ordinal in ordinals {
            match self.list_backups(ordinal).await {
                Ok(list) => {
                    listings.insert(ordinal, list.into_iter().map(|b| b.file_name).collect());
                }
                Err(err) => prune_errors.push(err.to_string()),
            }
        }
        let mut pruned = Vec::new();
        for (ordinal, file) in plan_pruning(cluster, retain, &listings) {
            match self.delete_backup(ordinal, &file).await {
                Ok(()) => pruned.push((ordinal, file)),
                Err(err) => prune_errors.push(err.to_string()),
            }
        }
        Ok(BackupDone {
            ordinal: take.ordinal,
            info,
            pruned,
            prune_errors,
        })
    }
}
