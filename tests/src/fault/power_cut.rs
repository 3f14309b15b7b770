//! Power cuts: a member loses what it wrote but did not fsync.
//!
//! `kill -9` ends the process but leaves the kernel's page cache, so a
//! member that acknowledges a write before fsyncing it survives every kill
//! the other faults inject. A power cut does not forgive that. No filesystem
//! that drops unsynced writes can be mounted here (no FUSE for Jepsen's
//! lazyfs, no device mapper), so this module stands in for one, for the file
//! acknowledged data lives in: RocksDB's write-ahead log (`db/NNNNNN.log`),
//! which RocksDB only ever appends to.
//!
//! Members of a cluster started with [`crate::ClusterOptions::power_cuts`]
//! run with `power_cut_shim.c` preloaded: every successful fsync or
//! fdatasync of a file in the cluster's dir records the length the file had
//! when the sync began. [`PowerCut::drop_unsynced`], after the member was
//! `kill -9`ed, truncates each write-ahead log to its last recorded length
//! (to nothing if it was never synced), which is exactly what a power cut
//! that loses every unsynced page leaves of an append-only file.
//!
//! What this cannot catch: SST files, the MANIFEST and `CURRENT` (RocksDB
//! syncs them before it relies on them, and that is RocksDB's contract, not
//! ours), a directory entry whose directory was never fsynced (a created or
//! renamed file survives here), our own snapshot and backup files, torn
//! writes inside a synced range, and a disk that lies about fsync. A file
//! that reuses a deleted one's name and inode number inherits its record,
//! which can hide a loss but never invent one (a file is never extended).

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The shim built by `tests/build.rs`.
const SHIM: &str = env!("POWER_CUT_SHIM");

/// Power cuts for the members whose files are under one dir.
#[derive(Debug, Clone)]
pub struct PowerCut {
    /// Where the members' files are (a cluster's root).
    watched: PathBuf,
    /// One line per sync: `<length> <inode> <path>`.
    record: PathBuf,
}

impl PowerCut {
    /// Power cuts for members whose dirs are under `watched`; the record of
    /// syncs is kept in `watched` too (it is written, never synced, and a
    /// power cut never touches it: it is the test's knowledge, not the disk's).
    pub fn new(watched: &Path) -> Result<PowerCut> {
        let watched = watched
            .canonicalize()
            .with_context(|| format!("resolving {}", watched.display()))?;
        let record = watched.join("power-cut-syncs");
        Ok(PowerCut { watched, record })
    }

    /// The environment a member needs for its syncs to be recorded.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".to_string(), SHIM.to_string()),
            (
                "POWER_CUT_WATCHED_DIR".to_string(),
                self.watched.to_string_lossy().into_owned(),
            ),
            (
                "POWER_CUT_SYNC_RECORD".to_string(),
                self.record.to_string_lossy().into_owned(),
            ),
        ]
    }

    /// Syncs recorded so far (evidence that the shim is in the members).
    pub fn syncs_recorded(&self) -> Result<usize> {
        Ok(self.read_record()?.syncs)
    }

    /// Truncate every write-ahead log under `data_dir` to what its last sync
    /// made durable; the bytes that lost. Only for a member that is not running.
    pub fn drop_unsynced(&self, data_dir: &Path) -> Result<u64> {
        let synced = self.read_record()?.lengths;
        let db = data_dir
            .canonicalize()
            .with_context(|| format!("resolving {}", data_dir.display()))?
            .join("db");
        let mut lost = 0;
        let entries = match std::fs::read_dir(&db) {
            Ok(entries) => entries,
            // A member that never opened its database has nothing to lose.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e).with_context(|| format!("listing {}", db.display())),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            if !is_write_ahead_log(&path) {
                continue;
            }
            let meta = entry.metadata()?;
            let durable = synced
                .get(&(path.clone(), std::os::unix::fs::MetadataExt::ino(&meta)))
                .copied()
                .unwrap_or(0);
            // Never extend a file: a length recorded for a file that has since
            // shrunk would add zeros RocksDB never wrote.
            if durable < meta.len() {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(durable))
                    .with_context(|| format!("truncating {}", path.display()))?;
                lost += meta.len() - durable;
            }
        }
        Ok(lost)
    }

    fn read_record(&self) -> Result<SyncRecord> {
        let text = match std::fs::read_to_string(&self.record) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.record.display())),
        };
        let mut record = SyncRecord::default();
        for line in text.lines() {
            let mut fields = line.splitn(3, ' ');
            let (Some(len), Some(inode), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let (Ok(len), Ok(inode)) = (len.parse::<u64>(), inode.parse::<u64>()) else {
                continue;
            };
            record.syncs += 1;
            let longest = record
                .lengths
                .entry((PathBuf::from(path), inode))
                .or_insert(0);
            *longest = len.max(*longest);
        }
        Ok(record)
    }
}

/// What the shim recorded.
#[derive(Default)]
struct SyncRecord {
    /// The longest synced length of each (path, inode). A file replaced under
    /// the same name (a wiped data dir) has a new inode, so its predecessor's
    /// syncs do not count for it.
    lengths: BTreeMap<(PathBuf, u64), u64>,
    syncs: usize,
}

/// RocksDB names its write-ahead logs `<number>.log` (its info log is `LOG`).
fn is_write_ahead_log(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "log")
        && path
            .file_stem()
            .and_then(|s| s.to_str())
            .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}
