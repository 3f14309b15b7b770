//! Raft snapshots of the state machine, as files.
//!
//! A snapshot is built from one RocksDB snapshot (so its key-values, revision and
//! last-applied log id belong to one instant), written to `snapshots/` as
//!
//! ```text
//! "RKVSNAP1" | u32 meta_len | meta (postcard SnapshotMeta)
//! { u8 family | u32 key_len | key | u32 value_len | value }*   family 1..=7
//! u8 0 (end) | u32 crc32 of every byte before it
//! ```
//!
//! and is streamed as-is to members that need it. A file is checked (magic,
//! lengths, checksum) before anything of it is written to the database.

use std::fs;
use std::fs::File;
use std::io;
use std::io::BufWriter;
use std::io::Read;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;

use rocksdb::IteratorMode;
use rocksdb::WriteBatch;
use rocksdb::DB;

use super::cf;
use super::io_err;
use super::schema::CF_AUTH;
use super::schema::CF_KV;
use super::schema::CF_KV_EVENTS;
use super::schema::CF_KV_HISTORY;
use super::schema::CF_LEASES;
use super::schema::CF_LEASE_KEYS;
use super::schema::CF_SM_META;
use super::schema::KEY_LAST_APPLIED;
use super::schema::KEY_MEMBERSHIP;
use crate::raft::codec;
use crate::raft::LogId;
use crate::raft::SnapshotMeta;
use crate::raft::StoredMembership;

pub(crate) const MAGIC: &[u8; 8] = b"RKVSNAP1";
pub(crate) const FAMILIES: [(u8, &str); 7] = [
    (1, CF_KV),
    (2, CF_KV_HISTORY),
    (3, CF_SM_META),
    (4, CF_KV_EVENTS),
    (5, CF_LEASES),
    (6, CF_LEASE_KEYS),
    (7, CF_AUTH),
];
const KEEP_SNAPSHOTS: usize = 2;

/// Writes records and keeps the running checksum.
struct Writer<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Writer<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.out.write_all(bytes)
    }

    fn put_len(&mut self, len: usize) -> io::Result<()> {
        let len = u32::try_from(len).map_err(|_| io::Error::other("snapshot record over 4 GiB"))?;
        self.put(&len.to_be_bytes())
    }
}

/// Build a snapshot file of the current state; returns its meta and path.
pub fn build(db: &DB, dir: &Path) -> io::Result<(SnapshotMeta, PathBuf)> {
    fs::create_dir_all(dir)?;
    let snap = db.snapshot();
    let meta_cf = cf(db, CF_SM_META);
    let last_applied: Option<LogId> =
        match snap.get_cf(meta_cf, KEY_LAST_APPLIED).map_err(io_err)? {
            Some(b) => codec::decode(&b)?,
            None => None,
        };
    let membership: StoredMembership = match snap.get_cf(meta_cf, KEY_MEMBERSHIP).map_err(io_err)? {
        Some(b) => codec::decode(&b)?,
        None => StoredMembership::default(),
    };
    let meta = SnapshotMeta {
        last_log_id: last_applied,
        last_membership: membership,
    };
    let final_path = dir.join(file_name(&meta));
    let tmp_path = dir.join(format!("building-{}.tmp", std::process::id()));
    let mut w = Writer {
        out: BufWriter::new(File::create(&tmp_path)?),
        crc: crc32fast::Hasher::new(),
    };
    w.put(MAGIC)?;
    let meta_bytes = codec::encode(&meta)?;
    w.put_len(meta_bytes.len())?;
    w.put(&meta_bytes)?;
    for (tag, name) in FAMILIES {
        for item in snap.iterator_cf(cf(db, name), IteratorMode::Start) {
            let (k, v) = item.map_err(io_err)?;
            if name == CF_SM_META && (&*k == KEY_LAST_APPLIED || &*k == KEY_MEMBERSHIP) {
                continue; // carried by the meta
            }
            w.put(&[tag])?;
            w.put_len(k.len())?;
            w.put(&k)?;
            w.put_len(v.len())?;
            w.put(&v)?;
        }
    }
    w.put(&[0])?;
    let crc = w.crc.clone().finalize();
    w.out.write_all(&crc.to_be_bytes())?;
    let file = w.out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    fs::rename(&tmp_path, &final_path)?;
    File::open(dir)?.sync_all()?;
    prune(dir)?;
    Ok((meta, final_path))
}

fn file_name(meta: &SnapshotMeta) -> String {
    match &meta.last_log_id {
        Some(id) => format!("snap-{:020}-{:020}.snap", id.index, id.leader_id.term),
        None => "snap-00000000000000000000-00000000000000000000.snap".into(),
    }
}

/// Snapshot files in `dir`, oldest first (names sort by index, then term).
fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "snap") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn prune(dir: &Path) -> io::Result<()> {
    let files = list(dir)?;
    for old in files
        .iter()
        .take(files.len().saturating_sub(KEEP_SNAPSHOTS))
    {
        fs::remove_file(old)?;
    }
    Ok(())
}

/// Delete what interrupted snapshots left in `dir` (a member stopped while
/// building one, `building-*.tmp`, installing one, `*.tmp`, or receiving one,
/// `incoming-*.part`): nothing reads them again, and they would fill the disk
/// one crash at a time. Called at start, before anything writes there.
pub fn remove_leftovers(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    if !dir.exists() {
        return Ok(removed);
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let leftover = path
            .extension()
            .is_some_and(|ext| ext == "tmp" || ext == "part");
        if leftover && path.is_file() {
            fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// The newest snapshot in `dir`, if any, with its meta and an open file.
pub fn latest(dir: &Path) -> io::Result<Option<(SnapshotMeta, File)>> {
    let Some(path) = list(dir)?.pop() else {
        return Ok(None);
    };
    let mut file = File::open(&path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let parsed =
        parse(&bytes).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(Some((parsed.meta, File::open(&path)?)))
}

/// A checked snapshot file: its meta and its records.
pub struct Parsed<'a> {
    pub meta: SnapshotMeta,
    pub records: Vec<(u8, &'a [u8], &'a [u8])>,
}

pub(crate) fn corrupt(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("corrupt snapshot: {what}"),
    )
}

/// Check and decode a whole snapshot file.
pub fn parse(bytes: &[u8]) -> io::Result<Parsed<'_>> {
    if bytes.len() < MAGIC.len() + 4 + 5 || &bytes[..8] != MAGIC {
        return Err(corrupt("not a raftkv snapshot (bad header)"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let expected = u32::from_be_bytes(crc.try_into().expect("4 bytes"));
    if crc32fast::hash(body) != expected {
        return Err(corrupt("checksum mismatch"));
    }
    let mut pos = 8;
    let take = |pos: &mut usize, n: usize| -> io::Result<&[u8]> {
        let end = pos
            .checked_add(n)
            .filter(|e| *e <= body.len())
            .ok_or_else(|| corrupt("truncated"))?;
        let s = &body[*pos..end];
        *pos = end;
        Ok(s)
    };
    let len = |pos: &mut usize| -> io::Result<usize> {
        Ok(u32::from_be_bytes(take(pos, 4)?.try_into().expect("4 bytes")) as usize)
    };
    let meta_len = len(&mut pos)?;
    let meta: SnapshotMeta = codec::decode(take(&mut pos, meta_len)?)?;
    let mut records = Vec::new();
    loop {
        let tag = take(&mut pos, 1)?[0];
        if tag == 0 {
            break;
        }
        if !FAMILIES.iter().any(|(t, _)| *t == tag) {
            return Err(corrupt("unknown record family"));
        }
        let klen = len(&mut pos)?;
        let key = take(&mut pos, klen)?;
        let vlen = len(&mut pos)?;
        let value = take(&mut pos, vlen)?;
        records.push((tag, key, value));
    }
    if pos != body.len() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(Parsed { meta, records })
}

/// Replace the whole state machine with the snapshot in `file`, durably, in one
/// atomic write; then keep the file as this member's current snapshot.
pub fn install(db: &DB, dir: &Path, meta: &SnapshotMeta, mut file: File) -> io::Result<()> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let parsed = parse(&bytes)?;
    if parsed.meta.last_log_id != meta.last_log_id {
        return Err(corrupt(
            "file does not match the snapshot meta it was sent with",
        ));
    }
    let mut batch = WriteBatch::default();
    for (_, name) in FAMILIES {
        clear_family(db, name, &mut batch)?;
    }
    for (tag, key, value) in &parsed.records {
        let name = FAMILIES
            .iter()
            .find(|(t, _)| t == tag)
            .expect("checked by parse")
            .1;
        batch.put_cf(cf(db, name), key, value);
    }
    let meta_cf = cf(db, CF_SM_META);
    batch.put_cf(meta_cf, KEY_LAST_APPLIED, codec::encode(&meta.last_log_id)?);
    batch.put_cf(
        meta_cf,
        KEY_MEMBERSHIP,
        codec::encode(&meta.last_membership)?,
    );
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts).map_err(io_err)?;

    fs::create_dir_all(dir)?;
    let path = dir.join(file_name(meta));
    let tmp = path.with_extension("tmp");
    let mut out = File::create(&tmp)?;
    out.write_all(&bytes)?;
    out.sync_all()?;
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    prune(dir)
}

/// Delete every key of a column family within `batch`.
fn clear_family(db: &DB, name: &str, batch: &mut WriteBatch) -> io::Result<()> {
    let handle = cf(db, name);
    let first = db
        .iterator_cf(handle, IteratorMode::Start)
        .next()
        .transpose()
        .map_err(io_err)?;
    let last = db
        .iterator_cf(handle, IteratorMode::End)
        .next()
        .transpose()
        .map_err(io_err)?;
    if let (Some((first, _)), Some((last, _))) = (first, last) {
        batch.delete_range_cf(handle, &first, &last);
        batch.delete_cf(handle, &last);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let meta = SnapshotMeta::default();
        let meta_bytes = codec::encode(&meta).unwrap();
        let mut body = MAGIC.to_vec();
        body.extend((meta_bytes.len() as u32).to_be_bytes());
        body.extend(meta_bytes);
        body.push(1);
        body.extend(1u32.to_be_bytes());
        body.push(b'k');
        body.extend(2u32.to_be_bytes());
        body.extend(b"vv");
        body.push(0);
        let crc = crc32fast::hash(&body);
        body.extend(crc.to_be_bytes());
        body
    }

    #[test]
    fn well_formed_file_parses() {
        let bytes = sample();
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed.records, vec![(1, &b"k"[..], &b"vv"[..])]);
    }

    #[test]
    fn flipped_byte_and_truncation_are_refused() {
        let bytes = sample();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(parse(&bad).is_err(), "flip at {i} accepted");
        }
        for n in 0..bytes.len() {
            assert!(parse(&bytes[..n]).is_err(), "truncation to {n} accepted");
        }
    }
}
