//! The broadcast of committed changes, and the history to catch up from.

use std::sync::Arc;

use prost::Message;
use rocksdb::DB;
use tokio::sync::broadcast;

use crate::errors::ApiError;
use crate::proto::mvccpb::Event;
use crate::proto::mvccpb::KeyValue;
use crate::store::mvcc;
use crate::store::schema;
use crate::store::schema::CF_KV_EVENTS;

/// Committed batches a stream may fall behind by before it is caught up from
/// history instead (each batch is one apply: one or more revisions).
const LIVE_BATCHES: usize = 1024;

/// Most events read from history at a time while catching up (a revision is
/// never split, so a chunk may hold more).
pub const HISTORY_CHUNK: usize = 1000;

pub struct WatchHub {
    tx: broadcast::Sender<Arc<Vec<Event>>>,
}

impl Default for WatchHub {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(LIVE_BATCHES).0,
        }
    }
}

impl WatchHub {
    /// Publish a committed batch of changes (in revision order).
    pub fn publish(&self, events: Vec<Event>) {
        if !events.is_empty() {
            // No receivers is fine: nobody watches.
            let _ = self.tx.send(Arc::new(events));
        }
    }

    /// Changes were applied without being published (a snapshot from the
    /// leader was installed): every stream catches up from history.
    pub fn resync(&self) {
        let _ = self.tx.send(Arc::new(Vec::new()));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<Event>>> {
        self.tx.subscribe()
    }
}

/// The revision of an event (its key-value's mod revision).
pub fn revision_of(e: &Event) -> i64 {
    e.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

/// A chunk of history, and the compaction revision of the same moment.
pub struct History {
    /// Committed events from the revision asked for on.
    pub events: Vec<Event>,
    /// Events before this revision are gone: a reader that asked for an
    /// earlier one would jump over them, so it must be told it was compacted.
    pub compacted: i64,
}

/// Committed events from revision `from` on: at least `HISTORY_CHUNK` of them
/// (when there are that many), always ending at a revision boundary; read in
/// one snapshot with the compaction revision, so a compaction between two
/// chunks shows as `compacted > from`, never as a silent gap.
pub fn history(db: &DB, from: i64) -> Result<History, ApiError> {
    let snap = db.snapshot();
    let view = mvcc::View {
        db,
        snap: Some(&snap),
    };
    let compacted = mvcc::read_i64(&view, schema::KEY_COMPACT_REVISION).unwrap_or(0);
    let start = schema::event_key(from, 0);
    let iter = view.scan(CF_KV_EVENTS, &start, None);
    let mut out: Vec<Event> = Vec::new();
    for item in iter {
        let (_, value) = item.map_err(ApiError::internal)?;
        let event = Event::decode(value.as_ref())
            .map_err(|e| ApiError::internal(format!("corrupt event record: {e}")))?;
        if out.len() >= HISTORY_CHUNK && out.last().map(revision_of) != Some(revision_of(&event)) {
            break;
        }
        out.push(event);
    }
    Ok(History {
        events: out,
        compacted,
    })
}

/// The key as it was just before `revision` (for `prev_kv`), if still known.
pub fn prev_kv(db: &DB, key: &[u8], revision: i64) -> Option<KeyValue> {
    let req = crate::proto::etcdserverpb::RangeRequest {
        key: key.to_vec(),
        revision: revision - 1,
        ..Default::default()
    };
    if req.revision < 1 {
        return None;
    }
    let view = mvcc::View { db, snap: None };
    let compacted = mvcc::read_i64(&view, schema::KEY_COMPACT_REVISION).unwrap_or(0);
    let current = mvcc::read_i64(&view, schema::KEY_REVISION).unwrap_or(1);
    mvcc::range_in_view(&view, &req, current, compacted)
        .ok()?
        .kvs
        .pop()
}
