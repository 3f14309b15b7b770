//! Admin.SaveBackup, ListBackups and DeleteBackup: backup files in the
//! member's `--backup-dir`, in the format `raftkv snapshot save` writes (see
//! `crate::backup`), so scheduled backups taken by the operator can be checked
//! and restored with the same commands as hand-made ones.

use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use tonic::Response;
use tonic::Status;

use crate::node::Node;
use crate::proto::raftkvpb::admin::*;

/// The path of backup `file_name`, refusing names that could leave the directory.
pub fn path_of(node: &Node, file_name: &str) -> Result<PathBuf, Status> {
    if !crate::backup::valid_file_name(file_name) {
        return Err(Status::invalid_argument(format!(
            "raftkv: backup file name {file_name:?} must be a plain name (no '/', not starting with '.')"
        )));
    }
    Ok(node.backup_dir().join(file_name))
}

fn io_status(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("raftkv: {what}: {e}"))
}

pub async fn save(node: &Node, file_name: &str) -> Result<Response<SaveBackupResponse>, Status> {
    let path = path_of(node, file_name)?;
    std::fs::create_dir_all(node.backup_dir())
        .map_err(|e| io_status(&format!("creating {}", node.backup_dir().display()), e))?;
    if path.exists() {
        return Err(Status::already_exists(format!(
            "raftkv: backup {file_name:?} already exists"
        )));
    }
    let summary = node
        .save_backup(path.clone())
        .await
        .map_err(|e| io_status(&format!("writing backup {file_name}"), e))?;
    let modified = modified_secs(&path);
    tracing::info!(file = %path.display(), revision = summary.revision, bytes = summary.size_bytes, "saved a backup");
    Ok(Response::new(SaveBackupResponse {
        backup: Some(BackupInfo {
            file_name: file_name.to_string(),
            size_bytes: summary.size_bytes,
            revision: summary.revision,
            sha256: summary.sha256,
            modified_unix_secs: modified,
        }),
    }))
}

fn modified_secs(path: &std::path::Path) -> i64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

pub async fn list(node: &Node) -> Result<Response<ListBackupsResponse>, Status> {
    let mut backups = Vec::new();
    let entries = match std::fs::read_dir(node.backup_dir()) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Response::new(ListBackupsResponse { backups }))
        }
        Err(e) => return Err(io_status("listing backups", e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_status("listing backups", e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        // Hidden files are backups being written.
        if !crate::backup::valid_file_name(&name) || !entry.path().is_file() {
            continue;
        }
        backups.push(BackupInfo {
            size_bytes: entry.metadata().map_or(0, |m| m.len()),
            modified_unix_secs: modified_secs(&entry.path()),
            file_name: name,
            revision: 0,
            sha256: String::new(),
        });
    }
    backups.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    Ok(Response::new(ListBackupsResponse { backups }))
}

pub async fn delete(
    node: &Node,
    file_name: &str,
) -> Result<Response<DeleteBackupResponse>, Status> {
    let path = path_of(node, file_name)?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(Response::new(DeleteBackupResponse {})),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Status::not_found(format!(
            "raftkv: no backup named {file_name:?}"
        ))),
        Err(e) => Err(io_status(&format!("deleting {file_name}"), e)),
    }
}
