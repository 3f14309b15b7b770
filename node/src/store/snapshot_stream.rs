//! Reading a snapshot file (see `store::snapshot` for the format) record by
//! record, without holding it in memory: backups can be far larger than RAM
//! should be asked for. The checksum is only known to be right once the end
//! marker and the crc have been read, so callers that must not act on a corrupt
//! file read it through once to check it ([`check`]) before acting on it.

use std::io;
use std::io::Read;

use super::snapshot::corrupt;
use super::snapshot::FAMILIES;
use super::snapshot::MAGIC;
use crate::raft::codec;
use crate::raft::SnapshotMeta;

/// Largest key or value record accepted; a length above it means corruption,
/// not a record to allocate for.
const MAX_RECORD: usize = 256 << 20;

/// One record: column-family tag, key, value.
pub type Record = (u8, Vec<u8>, Vec<u8>);

pub struct RecordReader<R: Read> {
    input: R,
    crc: crc32fast::Hasher,
    /// Bytes consumed from `input` so far.
    pub consumed: u64,
    pub meta: SnapshotMeta,
    done: bool,
}

impl<R: Read> RecordReader<R> {
    /// Read the header and meta.
    pub fn open(input: R) -> io::Result<Self> {
        let mut r = RecordReader {
            input,
            crc: crc32fast::Hasher::new(),
            consumed: 0,
            meta: SnapshotMeta::default(),
            done: false,
        };
        let magic = r
            .bytes(MAGIC.len())
            .map_err(|_| corrupt("not a raftkv snapshot (bad header)"))?;
        if magic != MAGIC {
            return Err(corrupt("not a raftkv snapshot (bad header)"));
        }
        let meta_len = r.read_len()?;
        let meta_bytes = r.bytes(meta_len)?;
        r.meta = codec::decode(&meta_bytes).map_err(|_| corrupt("bad meta"))?;
        Ok(r)
    }

    fn bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        if n > MAX_RECORD {
            return Err(corrupt("record length out of range"));
        }
        let mut buf = vec![0u8; n];
        self.input
            .read_exact(&mut buf)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => corrupt("truncated"),
                _ => e,
            })?;
        self.crc.update(&buf);
        self.consumed += n as u64;
        Ok(buf)
    }

    fn read_len(&mut self) -> io::Result<usize> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
    }

    /// The next record, or `None` after the end marker, whose checksum has
    /// then been verified.
    pub fn next_record(&mut self) -> io::Result<Option<Record>> {
        if self.done {
            return Ok(None);
        }
        let tag = self.bytes(1)?[0];
        if tag == 0 {
            let expected = self.crc.clone().finalize();
            let mut crc = [0u8; 4];
            self.input
                .read_exact(&mut crc)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => corrupt("truncated"),
                    _ => e,
                })?;
            self.consumed += 4;
            if u32::from_be_bytes(crc) != expected {
                return Err(corrupt("checksum mismatch"));
            }
            self.done = true;
            return Ok(None);
        }
        if !FAMILIES.iter().any(|(t, _)| *t == tag) {
            return Err(corrupt("unknown record family"));
        }
        let klen = self.read_len()?;
        let key = self.bytes(klen)?;
        let vlen = self.read_len()?;
        let value = self.bytes(vlen)?;
        Ok(Some((tag, key, value)))
    }

    /// The input after the snapshot's last byte.
    pub fn into_inner(self) -> R {
        self.input
    }
}

/// The column family a record tag stands for.
pub fn family_name(tag: u8) -> &'static str {
    FAMILIES
        .iter()
        .find(|(t, _)| *t == tag)
        .map(|(_, n)| *n)
        .expect("tags are checked when read")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_sample() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open_db(dir.path()).unwrap();
        db.put_cf(
            crate::store::cf(&db, crate::store::schema::CF_KV),
            b"k",
            b"v",
        )
        .unwrap();
        let (_, path) = crate::store::snapshot::build(&db, &dir.path().join("s")).unwrap();
        std::fs::read(path).unwrap()
    }

    #[test]
    fn reads_what_build_writes_and_refuses_damage() {
        let bytes = build_sample();
        let mut r = RecordReader::open(&bytes[..]).unwrap();
        let mut n = 0;
        while r.next_record().unwrap().is_some() {
            n += 1;
        }
        assert!(n >= 1);
        assert_eq!(r.consumed, bytes.len() as u64);
        let read_all = |b: &[u8]| -> io::Result<()> {
            let mut r = RecordReader::open(b)?;
            while r.next_record()?.is_some() {}
            Ok(())
        };
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(read_all(&bad).is_err(), "flip at {i} accepted");
        }
        for n in 0..bytes.len() {
            assert!(read_all(&bytes[..n]).is_err(), "truncation to {n} accepted");
        }
    }
}
