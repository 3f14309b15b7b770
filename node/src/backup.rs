//! Backup files: what etcd's Maintenance.Snapshot streams, `raftkv snapshot
//! save` (and `etcdctl snapshot save`) write, and `snapshot status|restore` and
//! `Initialize.restore_from_backup` read.
//!
//! ```text
//! raftkv snapshot file (store::snapshot) | zeros to a multiple of 512 bytes | sha256 of all before (32 bytes)
//! ```
//!
//! The padding and trailer are etcd's, so etcdctl accepts the stream; the inner
//! file carries its own structure and crc32. A file is checked whole (sha256,
//! then structure and crc) before anything is built from it, reading it as a
//! stream: a backup is never held in memory.

use std::fs::File;
use std::io;
use std::io::BufReader;
use std::io::BufWriter;
use std::io::Read;
use std::io::Write;
use std::path::Path;

use rocksdb::WriteBatch;
use rocksdb::DB;
use sha2::Digest;

use crate::raft::SnapshotMeta;
use crate::store::cf;
use crate::store::io_err;
use crate::store::schema::CF_KV;
use crate::store::schema::CF_SM_META;
use crate::store::snapshot_stream::family_name;
use crate::store::snapshot_stream::RecordReader;

const TRAILER: u64 = 32;
const PAD: u64 = 512;
const CHUNK: usize = 1 << 20;

/// What a checked backup holds.
#[derive(Debug, Clone)]
pub struct Summary {
    pub size_bytes: u64,
    pub sha256: String,
    pub revision: i64,
    pub key_count: u64,
    /// The Raft position of the member it was taken from.
    pub meta: SnapshotMeta,
}

fn corrupt(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("corrupt backup: {what}"),
    )
}

/// Build a consistent snapshot of `db` (in `scratch`, removed afterwards) and
/// hand it to `sink` in chunks, with etcd's padding and sha256 trailer; `sink`
/// gets each chunk and the bytes remaining after it, and returns false to stop.
/// Returns the total size and the sha256 (hex).
pub fn produce(
    db: &DB,
    scratch: &Path,
    mut sink: impl FnMut(Vec<u8>, u64) -> io::Result<bool>,
) -> io::Result<(u64, String)> {
    let result = (|| {
        let (_, path) = crate::store::snapshot::build(db, scratch)?;
        let content = std::fs::metadata(&path)?.len();
        let total = content.next_multiple_of(PAD) + TRAILER;
        let mut file = File::open(&path)?;
        let mut sha = sha2::Sha256::new();
        let mut sent = 0u64;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            sha.update(&buf);
            sent += n as u64;
            if !sink(buf, total - sent)? {
                return Ok((total, String::new()));
            }
        }
        let padding = vec![0u8; (content.next_multiple_of(PAD) - content) as usize];
        sha.update(&padding);
        let digest = sha.finalize();
        let mut tail = padding;
        tail.extend_from_slice(&digest);
        sink(tail, 0)?;
        Ok((total, hex(&digest)))
    })();
    let _ = std::fs::remove_dir_all(scratch);
    result
}

/// Write a backup of `db` to `path` (via a temporary file and a rename, so a
/// half-written backup never carries the final name).
pub fn save(db: &DB, scratch: &Path, path: &Path) -> io::Result<Summary> {
    let tmp = path.with_file_name(format!(
        ".{}.part",
        path.file_name()
            .map_or("backup".into(), |n| n.to_string_lossy())
    ));
    let mut out = BufWriter::new(File::create(&tmp)?);
    let written = produce(db, scratch, |chunk, _| out.write_all(&chunk).map(|_| true));
    let finish = written.and_then(|_| {
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    });
    if let Err(e) = finish {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let summary = match check(&tmp, &mut |_| {}) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(summary)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Check a backup file completely (sha256 over the whole file, then the inner
/// snapshot's structure and crc32, then the padding) and summarize it.
/// `progress` gets the bytes read so far (the file is read twice).
pub fn check(path: &Path, progress: &mut dyn FnMut(u64)) -> io::Result<Summary> {
    let size = std::fs::metadata(path)?.len();
    if size < TRAILER + PAD || !(size - TRAILER).is_multiple_of(PAD) {
        return Err(corrupt(format!(
            "{size} bytes is not a whole backup (truncated?)"
        )));
    }
    let body_len = size - TRAILER;
    // Pass 1: the sha256 trailer.
    let mut input = BufReader::with_capacity(CHUNK, File::open(path)?);
    let mut sha = sha2::Sha256::new();
    let mut left = body_len;
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        let n = (left as usize).min(CHUNK);
        input.read_exact(&mut buf[..n])?;
        sha.update(&buf[..n]);
        left -= n as u64;
        progress(body_len - left);
    }
    let mut trailer = [0u8; TRAILER as usize];
    input.read_exact(&mut trailer)?;
    let digest = sha.finalize();
    if digest[..] != trailer[..] {
        return Err(corrupt("sha256 mismatch (the file was changed or damaged)"));
    }
    // Pass 2: structure and crc32 of the inner snapshot, then zero padding.
    let mut revision = 1;
    let mut key_count = 0u64;
    let meta = read_records(path, body_len, progress, &mut |(tag, key, value)| {
        let family = family_name(tag);
        if family == CF_KV {
            key_count += 1;
        } else if family == CF_SM_META && key == crate::store::schema::KEY_REVISION {
            if let Ok(b) = <[u8; 8]>::try_from(value.as_slice()) {
                revision = i64::from_be_bytes(b);
            }
        }
        Ok(())
    })?;
    Ok(Summary {
        size_bytes: size,
        sha256: hex(&digest),
        revision,
        key_count,
        meta,
    })
}

/// Read the snapshot records of a backup in order; checks structure, crc and
/// padding (not the sha256: see [`check`]).
fn read_records(
    path: &Path,
    body_len: u64,
    progress: &mut dyn FnMut(u64),
    each: &mut dyn FnMut(crate::store::snapshot_stream::Record) -> io::Result<()>,
) -> io::Result<SnapshotMeta> {
    let input = BufReader::with_capacity(CHUNK, File::open(path)?).take(body_len);
    let mut reader = RecordReader::open(input).map_err(corrupt)?;
    let mut last_report = 0u64;
    while let Some(record) = reader.next_record().map_err(corrupt)? {
        each(record)?;
        if reader.consumed - last_report >= CHUNK as u64 {
            last_report = reader.consumed;
            progress(body_len + reader.consumed);
        }
    }
    let consumed = reader.consumed;
    let meta = reader.meta.clone();
    let mut rest = Vec::new();
    reader.into_inner().read_to_end(&mut rest)?;
    if consumed.next_multiple_of(PAD) != body_len || rest.iter().any(|b| *b != 0) {
        return Err(corrupt("unexpected bytes after the snapshot"));
    }
    progress(2 * body_len);
    Ok(meta)
}

/// Write the state-machine records of a checked backup into `db` (which must be
/// a new, empty database), in batches; the caller then records the Raft state
/// the data belongs to. Returns the backup's own snapshot meta.
pub fn load_into(db: &DB, path: &Path, progress: &mut dyn FnMut(u64)) -> io::Result<SnapshotMeta> {
    let body_len = std::fs::metadata(path)?.len() - TRAILER;
    let mut batch = WriteBatch::default();
    let meta = read_records(path, body_len, progress, &mut |(tag, key, value)| {
        batch.put_cf(cf(db, family_name(tag)), key, value);
        if batch.size_in_bytes() >= 8 << 20 {
            db.write(std::mem::take(&mut batch)).map_err(io_err)?;
        }
        Ok(())
    })?;
    db.write(batch).map_err(io_err)?;
    Ok(meta)
}

/// A backup file name given over the API: a plain name, nothing that could
/// leave the backup directory.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains('/')
        && !name.contains('\\')
        && !name.contains('\0')
        && name.len() <= 255
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_backup_checks_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open_db(dir.path()).unwrap();
        for i in 0..100u32 {
            db.put_cf(cf(&db, CF_KV), format!("k{i}"), vec![7u8; 300])
                .unwrap();
        }
        let path = dir.path().join("b.snap");
        let saved = save(&db, &dir.path().join("scratch"), &path).unwrap();
        assert_eq!(saved.key_count, 100);
        let bytes = std::fs::read(&path).unwrap();
        for at in [0, 9, bytes.len() / 2, bytes.len() - 40, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            assert!(check(&path, &mut |_| {}).is_err(), "flip at {at} accepted");
        }
        for len in [0, 100, bytes.len() - 512, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..len]).unwrap();
            assert!(check(&path, &mut |_| {}).is_err(), "length {len} accepted");
        }
        assert!(valid_file_name("nightly-1.db"));
        assert!(!valid_file_name("../x") && !valid_file_name(".hidden") && !valid_file_name(""));
    }
}
