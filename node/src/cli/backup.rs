//! `raftkv backup save|list|delete`: backups a member writes into its own
//! `--backup-dir` (Admin.SaveBackup & co), for scheduled backups kept next to
//! the member; `raftkv snapshot save` is the one that copies to this machine.

use super::client::status_err;
use super::client::Endpoints;
use crate::proto::raftkvpb::admin::admin_client::AdminClient;
use crate::proto::raftkvpb::admin::*;

#[derive(clap::Subcommand, Debug)]
pub enum BackupCmd {
    /// Write a backup named NAME in the member's backup dir.
    Save { name: String },
    /// List the member's backups.
    List,
    /// Delete backup NAME.
    Delete { name: String },
}

pub async fn run(ep: &Endpoints, cmd: BackupCmd) -> anyhow::Result<()> {
    let mut admin = AdminClient::new(ep.connect().await?);
    match cmd {
        BackupCmd::Save { name } => {
            let b = admin
                .save_backup(SaveBackupRequest { file_name: name })
                .await
                .map_err(status_err)?
                .into_inner()
                .backup
                .unwrap_or_default();
            println!(
                "saved {} (revision {}, {} bytes, sha256 {})",
                b.file_name, b.revision, b.size_bytes, b.sha256
            );
        }
        BackupCmd::List => {
            let list = admin
                .list_backups(ListBackupsRequest {})
                .await
                .map_err(status_err)?
                .into_inner();
            for b in list.backups {
                println!("{} {} {}", b.file_name, b.size_bytes, b.modified_unix_secs);
            }
        }
        BackupCmd::Delete { name } => {
            admin
                .delete_backup(DeleteBackupRequest {
                    file_name: name.clone(),
                })
                .await
                .map_err(status_err)?;
            println!("deleted {name}");
        }
    }
    Ok(())
}
