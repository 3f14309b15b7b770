//! etcd's MVCC read semantics over the `kv` / `kv_history` column families.
//!
//! `kv` holds the current version of every live key (fast current reads and
//! counts); `kv_history` holds every version and tombstone until compaction
//! (reads at a past revision). A read takes one RocksDB snapshot, so the keys it
//! returns and the revision in its header belong to the same instant.

use std::sync::Arc;

use prost::Message;
use rocksdb::DBIteratorWithThreadMode;
use rocksdb::Direction;
use rocksdb::IteratorMode;
use rocksdb::ReadOptions;
use rocksdb::DB;

use super::cf;
use super::schema;
use super::schema::CF_KV;
use super::schema::CF_KV_HISTORY;
use super::schema::CF_SM_META;
use crate::errors::ApiError;
use crate::proto::etcdserverpb::range_request::SortOrder;
use crate::proto::etcdserverpb::range_request::SortTarget;
use crate::proto::etcdserverpb::RangeRequest;
use crate::proto::etcdserverpb::RangeResponse;
use crate::proto::mvccpb::KeyValue;

use super::schema::{KEY_COMPACT_REVISION, KEY_REVISION};

/// Tag byte of a `kv_history` value: a version of the key, or its deletion.
pub(crate) const HISTORY_PUT: u8 = 1;
pub(crate) const HISTORY_TOMBSTONE: u8 = 0;

/// Which keys a request names, decoded from etcd's (key, range_end) convention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    /// `range_end` empty: exactly `key`.
    Single(Vec<u8>),
    /// `[start, end)`; `end == None` means no upper bound (`range_end == "\0"`).
    Span {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    },
}

impl KeyRange {
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key.to_vec()),
            [0] => KeyRange::Span {
                start: key.to_vec(),
                end: None,
            },
            end => KeyRange::Span {
                start: key.to_vec(),
                end: Some(end.to_vec()),
            },
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            KeyRange::Single(key) => key == k,
            KeyRange::Span { start, end } => {
                k >= start.as_slice() && end.as_ref().is_none_or(|e| k < e.as_slice())
            }
        }
    }

    /// True when no key can be in the range (an end at or before its start).
    pub fn is_empty(&self) -> bool {
        matches!(self, KeyRange::Span { start, end: Some(end) } if end <= start)
    }
}

/// Read-only access to the MVCC store; cheap to clone, used by the API layer.
#[derive(Clone)]
pub struct Mvcc {
    db: Arc<DB>,
}

/// One consistent view of the store: a RocksDB snapshot, or the live database.
pub(crate) struct View<'a> {
    pub db: &'a DB,
    pub snap: Option<&'a rocksdb::Snapshot<'a>>,
}

impl<'a> View<'a> {
    fn opts(&self) -> ReadOptions {
        let mut o = ReadOptions::default();
        if let Some(s) = self.snap {
            o.set_snapshot(s);
        }
        o
    }

    pub fn get(&self, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>, ApiError> {
        self.db
            .get_cf_opt(cf(self.db, family), key, &self.opts())
            .map_err(ApiError::internal)
    }

    /// Iterate `family` from `start` up to (excluding) `upper`.
    pub fn scan(
        &self,
        family: &str,
        start: &[u8],
        upper: Option<Vec<u8>>,
    ) -> DBIteratorWithThreadMode<'a, DB> {
        let mut o = self.opts();
        if let Some(u) = upper {
            o.set_iterate_upper_bound(u);
        }
        self.db.iterator_cf_opt(
            cf(self.db, family),
            o,
            IteratorMode::From(start, Direction::Forward),
        )
    }
}

impl Mvcc {
    pub fn new(db: Arc<DB>) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    /// The store revision: bumped once by every request that changes a key.
    pub fn current_revision(&self) -> i64 {
        read_i64(&self.live(), KEY_REVISION).unwrap_or(1)
    }

    pub fn compact_revision(&self) -> i64 {
        read_i64(&self.live(), KEY_COMPACT_REVISION).unwrap_or(0)
    }

    fn live(&self) -> View<'_> {
        View {
            db: &self.db,
            snap: None,
        }
    }

    /// Serve a Range request from a snapshot of the local state machine.
    /// The caller has already made the read linearizable if it has to be.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, ApiError> {
        let snap = self.db.snapshot();
        let view = View {
            db: &self.db,
            snap: Some(&snap),
        };
        let current = read_i64(&view, KEY_REVISION).unwrap_or(1);
        let compacted = read_i64(&view, KEY_COMPACT_REVISION).unwrap_or(0);
        let mut resp = range_in_view(&view, req, current, compacted)?;
        resp.header.get_or_insert_default().revision = current;
        Ok(resp)
    }
}

pub(crate) fn read_i64(view: &View<'_>, key: &[u8]) -> Option<i64> {
    let bytes = view.get(CF_SM_META, key).ok()??;
    Some(i64::from_be_bytes(bytes.as_slice().try_into().ok()?))
}

/// Range over a view whose current revision is `current`.
pub(crate) fn range_in_view(
    view: &View<'_>,
    req: &RangeRequest,
    current: i64,
    compacted: i64,
) -> Result<RangeResponse, ApiError> {
    if req.revision > current {
        return Err(ApiError::future_revision());
    }
    if req.revision > 0 && req.revision < compacted {
        return Err(ApiError::compacted());
    }
    let range = KeyRange::new(&req.key, &req.range_end);
    let keep = Keep(kept_by(req));
    let (kvs, count) = if range.is_empty() {
        (Vec::new(), 0)
    } else if req.revision == 0 || req.revision == current {
        current_kvs_kept(view, &range, keep)?
    } else {
        kvs_at_revision(view, &range, req.revision, keep)?
    };
    Ok(finish_counted(kvs, count, req))
}

/// How many of the keys in range a Range must hold to answer: those it
/// returns (`limit` + 1, to know there are more), or none when it only counts.
/// A Range that filters or sorts (other than by key, ascending) needs every
/// key in range, as in etcd; `None` then.
fn kept_by(req: &RangeRequest) -> Option<usize> {
    let filters = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    let in_key_order = SortTarget::try_from(req.sort_target) == Ok(SortTarget::Key)
        && matches!(
            SortOrder::try_from(req.sort_order),
            Ok(SortOrder::None | SortOrder::Ascend)
        );
    match () {
        _ if filters || !in_key_order => None,
        _ if req.count_only => Some(0),
        _ if req.limit > 0 => usize::try_from(req.limit).ok()?.checked_add(1),
        _ => None,
    }
}

/// At most this many keys are decoded and held (all when `None`); the rest
/// are only counted, so a Range with a limit over a large prefix (a paginated
/// list) costs memory for its page, not for the prefix.
#[derive(Clone, Copy)]
struct Keep(Option<usize>);

impl Keep {
    fn wants(self, held: usize) -> bool {
        self.0.is_none_or(|most| held < most)
    }
}

/// Every live key in `range`, in key order, from the `kv` column family.
pub(crate) fn current_kvs(view: &View<'_>, range: &KeyRange) -> Result<Vec<KeyValue>, ApiError> {
    Ok(current_kvs_kept(view, range, Keep(None))?.0)
}

/// The live keys in `range` that `keep` wants, and how many there are.
fn current_kvs_kept(
    view: &View<'_>,
    range: &KeyRange,
    keep: Keep,
) -> Result<(Vec<KeyValue>, i64), ApiError> {
    let mut out = Vec::new();
    let mut count = 0;
    match range {
        KeyRange::Single(key) => {
            if let Some(bytes) = view.get(CF_KV, key)? {
                count = 1;
                if keep.wants(0) {
                    out.push(decode_kv(&bytes)?);
                }
            }
        }
        KeyRange::Span { start, end } => {
            for item in view.scan(CF_KV, start, end.clone()) {
                let (_, value) = item.map_err(ApiError::internal)?;
                count += 1;
                if keep.wants(out.len()) {
                    out.push(decode_kv(&value)?);
                }
            }
        }
    }
    Ok((out, count))
}

/// A key and its newest version so far (its `kv_history` value, tag byte
/// first), or `None` when that was its deletion.
type Candidate = (Vec<u8>, Option<Box<[u8]>>);

/// The keys in `range` as they were at `revision` that `keep` wants, from
/// `kv_history`, and how many there are.
fn kvs_at_revision(
    view: &View<'_>,
    range: &KeyRange,
    revision: i64,
    keep: Keep,
) -> Result<(Vec<KeyValue>, i64), ApiError> {
    let (start, upper) = match range {
        KeyRange::Single(key) => (
            schema::history_prefix(key),
            prefix_end(&schema::history_prefix(key)),
        ),
        KeyRange::Span { start, end } => {
            (schema::escape(start), end.as_deref().map(schema::escape))
        }
    };
    let iter = view.scan(CF_KV_HISTORY, &start, upper);
    let mut out = Vec::new();
    let mut count = 0;
    // Versions of one key arrive in revision order; remember the newest one at or
    // before `revision` (undecoded: most are passed over) and emit it when the
    // next key starts.
    let mut candidate: Option<Candidate> = None;
    let mut emit = |found: Option<Candidate>| -> Result<(), ApiError> {
        if let Some((_, Some(version))) = found {
            count += 1;
            if keep.wants(out.len()) {
                out.push(decode_kv(&version[1..])?);
            }
        }
        Ok(())
    };
    for item in iter {
        let (hkey, value) = item.map_err(ApiError::internal)?;
        let Some((user_key, rev)) = schema::decode_history_key(&hkey) else {
            return Err(ApiError::internal("corrupt history key"));
        };
        if candidate.as_ref().is_some_and(|(k, _)| *k != user_key) {
            emit(candidate.take())?;
        }
        if rev > revision {
            continue;
        }
        let version = (value.first() == Some(&HISTORY_PUT)).then_some(value);
        candidate = Some((user_key, version));
    }
    emit(candidate)?;
    Ok((out, count))
}

pub(crate) fn decode_kv(bytes: &[u8]) -> Result<KeyValue, ApiError> {
    KeyValue::decode(bytes)
        .map_err(|e| ApiError::internal(format!("corrupt key-value record: {e}")))
}

/// Apply a Range request's filters, sort, limit and projections to the keys in range.
pub(crate) fn finish_range(kvs: Vec<KeyValue>, req: &RangeRequest) -> RangeResponse {
    let count = kvs.len() as i64;
    finish_counted(kvs, count, req)
}

/// `finish_range` for `count` keys in range, of which `kvs` are those held
/// (see `kept_by`). etcd counts the keys in range before the revision filters
/// prune them.
fn finish_counted(mut kvs: Vec<KeyValue>, count: i64, req: &RangeRequest) -> RangeResponse {
    kvs.retain(|kv| {
        (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
            && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
            && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
            && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
    });
    let order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    // etcd: a sort target other than KEY with no order means ascending.
    let order = match (order, target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    if order != SortOrder::None {
        let key_of = |kv: &KeyValue| -> (Vec<u8>, i64) {
            match target {
                SortTarget::Key => (kv.key.clone(), 0),
                SortTarget::Version => (Vec::new(), kv.version),
                SortTarget::Create => (Vec::new(), kv.create_revision),
                SortTarget::Mod => (Vec::new(), kv.mod_revision),
                SortTarget::Value => (kv.value.clone(), 0),
            }
        };
        // Stable sort keeps key order among equal sort keys, as etcd does.
        kvs.sort_by_key(key_of);
        if order == SortOrder::Descend {
            kvs.reverse();
        }
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() as i64 > req.limit {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.count_only {
        kvs.clear();
    } else if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResponse {
        header: None,
        kvs,
        more,
        count,
    }
}

/// The smallest key greater than every key with this prefix (etcd's `GetPrefixRangeEnd`).
/// `None` means "no upper bound" (the prefix is all 0xff or empty).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefix_end_matches_etcd() {
        assert_eq!(super::prefix_end(b"abc"), Some(b"abd".to_vec()));
        assert_eq!(super::prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(super::prefix_end(b"\xff\xff"), None);
    }

    use super::*;

    fn kv(key: &str, create: i64, modr: i64, version: i64) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            value: format!("v-{key}").into_bytes(),
            create_revision: create,
            mod_revision: modr,
            version,
            lease: 0,
        }
    }

    #[test]
    fn key_range_follows_etcd_conventions() {
        assert!(KeyRange::new(b"a", b"").contains(b"a"));
        assert!(!KeyRange::new(b"a", b"").contains(b"ab"));
        assert!(KeyRange::new(b"a", b"\0").contains(b"zzz"));
        assert!(KeyRange::new(b"a", b"c").contains(b"b"));
        assert!(!KeyRange::new(b"a", b"c").contains(b"c"));
        assert!(KeyRange::new(b"c", b"a").is_empty());
    }

    #[test]
    fn limit_sets_more_and_count_is_total() {
        let kvs = vec![kv("a", 2, 2, 1), kv("b", 3, 3, 1), kv("c", 4, 4, 1)];
        let req = RangeRequest {
            limit: 2,
            ..Default::default()
        };
        let resp = finish_range(kvs, &req);
        assert_eq!(resp.kvs.len(), 2);
        assert!(resp.more);
        assert_eq!(resp.count, 3);
    }

    #[test]
    fn sort_by_mod_revision_descending_then_limit() {
        let kvs = vec![kv("a", 2, 9, 3), kv("b", 3, 5, 1), kv("c", 4, 7, 2)];
        let req = RangeRequest {
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Mod as i32,
            limit: 2,
            ..Default::default()
        };
        let resp = finish_range(kvs, &req);
        let keys: Vec<_> = resp.kvs.iter().map(|k| k.key.clone()).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn count_only_and_keys_only() {
        let kvs = vec![kv("a", 2, 2, 1), kv("b", 3, 3, 1)];
        let resp = finish_range(
            kvs.clone(),
            &RangeRequest {
                count_only: true,
                ..Default::default()
            },
        );
        assert!(resp.kvs.is_empty());
        assert_eq!(resp.count, 2);
        let resp = finish_range(
            kvs,
            &RangeRequest {
                keys_only: true,
                ..Default::default()
            },
        );
        assert!(resp.kvs.iter().all(|k| k.value.is_empty()));
    }

    #[test]
    fn revision_filters_prune_after_count() {
        let kvs = vec![kv("a", 2, 2, 1), kv("b", 3, 8, 2)];
        let resp = finish_range(
            kvs,
            &RangeRequest {
                min_mod_revision: 5,
                ..Default::default()
            },
        );
        assert_eq!(resp.count, 2);
        assert_eq!(resp.kvs.len(), 1);
        assert_eq!(resp.kvs[0].key, b"b");
    }
}
