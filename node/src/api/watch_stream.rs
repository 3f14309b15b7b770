//! One gRPC watch stream: its watchers, and delivering events to them.
//!
//! Each watcher remembers the next revision it needs (`next_rev`). Live batches
//! and history chunks go through the same `deliver`, which sends a watcher only
//! events at or after its `next_rev` and then moves it past the batch, so an
//! event reaches a watcher exactly once however it arrives (broadcast, replay or
//! catch-up after falling behind).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tonic::Status;

use crate::node::Node;
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::*;
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::Event;
use crate::store::mvcc::KeyRange;
use crate::watch::hub::revision_of;

/// The watch id etcd uses for responses that concern the whole stream.
const STREAM_WATCH_ID: i64 = -1;

struct Watcher {
    range: KeyRange,
    next_rev: i64,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// Whether events were sent since the last progress tick.
    sent_since_tick: bool,
}

impl Watcher {
    fn wants(&self, e: &Event) -> bool {
        let Some(kv) = &e.kv else { return false };
        if kv.mod_revision < self.next_rev || !self.range.contains(&kv.key) {
            return false;
        }
        match EventType::try_from(e.r#type) {
            Ok(EventType::Put) => !self.no_put,
            Ok(EventType::Delete) => !self.no_delete,
            Err(_) => false,
        }
    }
}

pub struct WatchStream {
    node: Arc<Node>,
    /// Who opened the stream: each watch it creates needs read permission.
    caller: crate::auth::Caller,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
}

/// The client is gone (or the stream failed): stop serving this stream.
struct Closed;

impl WatchStream {
    pub fn new(
        node: Arc<Node>,
        out: mpsc::Sender<Result<WatchResponse, Status>>,
        caller: crate::auth::Caller,
    ) -> Self {
        Self {
            node,
            caller,
            out,
            watchers: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// Serve the stream until the client goes away. A client that only
    /// closes its sending side still gets its events, as from etcd (whose
    /// JSON gateway users send one create request and read on).
    pub async fn run(
        mut self,
        mut requests: tonic::Streaming<WatchRequest>,
        progress_every: Duration,
    ) {
        let mut live = self.node.watch_hub().subscribe();
        // The last revision the broadcast is known to have covered. Every
        // revision carries events, so a batch starting past `live_rev + 1`, or
        // the hub's empty "resync" batch, means changes were applied without
        // being broadcast (a member that installs a snapshot from the leader
        // jumps many revisions at once): those are served from history.
        let mut live_rev = self.node.mvcc().current_revision();
        let mut tick = tokio::time::interval(progress_every);
        tick.tick().await;
        let mut requests_open = true;
        let client = self.out.clone();
        loop {
            let step = tokio::select! {
                req = requests.message(), if requests_open => match req {
                    Ok(Some(r)) => self.handle(r).await,
                    Ok(None) => {
                        requests_open = false;
                        Ok(())
                    }
                    Err(_) => Err(Closed),
                },
                _ = client.closed() => Err(Closed),
                batch = live.recv() => match batch {
                    Ok(events) => {
                        let first = events.first().map_or(0, revision_of);
                        let last = events.last().map_or(0, revision_of);
                        let skipped = events.is_empty() || first > live_rev + 1;
                        live_rev = live_rev.max(last);
                        if skipped {
                            live_rev = live_rev.max(self.node.mvcc().current_revision());
                            self.catch_up().await
                        } else {
                            self.deliver(&events).await
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        live_rev = live_rev.max(self.node.mvcc().current_revision());
                        self.catch_up().await
                    }
                    Err(RecvError::Closed) => Err(Closed),
                },
                _ = tick.tick() => self.progress_tick().await,
            };
            if step.is_err() {
                return;
            }
        }
    }

    async fn send(&self, resp: WatchResponse) -> Result<(), Closed> {
        self.out.send(Ok(resp)).await.map_err(|_| Closed)
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(self.node.header(self.node.mvcc().current_revision()))
    }

    async fn handle(&mut self, req: WatchRequest) -> Result<(), Closed> {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => {
                let canceled = self.watchers.remove(&c.watch_id).is_some();
                if canceled {
                    self.send(WatchResponse {
                        header: self.header(),
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    })
                    .await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                self.send(WatchResponse {
                    header: self.header(),
                    watch_id: STREAM_WATCH_ID,
                    ..Default::default()
                })
                .await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, c: WatchCreateRequest) -> Result<(), Closed> {
        // etcd: an empty key means "\0" (the smallest key), and a range end of
        // "\0" means "every key from key on".
        let key = if c.key.is_empty() {
            vec![0]
        } else {
            c.key.clone()
        };
        let range = KeyRange::new(&key, &c.range_end);
        if self
            .caller
            .require(&key, &c.range_end, crate::auth::Need::Read)
            .is_err()
        {
            return self
                .refuse(c.watch_id, "etcdserver: permission denied")
                .await;
        }
        let id = if c.watch_id != 0 {
            if self.watchers.contains_key(&c.watch_id) {
                return self
                    .refuse(
                        c.watch_id,
                        "mvcc: duplicate watch ID provided on the WatchStream",
                    )
                    .await;
            }
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        let current = self.node.mvcc().current_revision();
        let compacted = self.node.mvcc().compact_revision();
        self.send(WatchResponse {
            header: Some(self.node.header(current)),
            watch_id: id,
            created: true,
            ..Default::default()
        })
        .await?;
        if c.start_revision > 0 && c.start_revision < compacted {
            return self.send_compacted(id, compacted).await;
        }
        let has = |f: FilterType| c.filters.contains(&(f as i32));
        self.watchers.insert(
            id,
            Watcher {
                range,
                next_rev: if c.start_revision > 0 {
                    c.start_revision
                } else {
                    current + 1
                },
                no_put: has(FilterType::Noput),
                no_delete: has(FilterType::Nodelete),
                prev_kv: c.prev_kv,
                fragment: c.fragment,
                progress_notify: c.progress_notify,
                sent_since_tick: false,
            },
        );
        if c.start_revision > 0 && c.start_revision <= current {
            self.replay(Some(id)).await?;
        }
        Ok(())
    }

    /// etcd's answer to a watch it will not serve: created, then canceled.
    async fn refuse(&self, id: i64, reason: &str) -> Result<(), Closed> {
        self.send(WatchResponse {
            header: self.header(),
            watch_id: id,
            created: true,
            canceled: true,
            cancel_reason: reason.into(),
            ..Default::default()
        })
        .await
    }

    async fn send_compacted(&self, id: i64, compacted: i64) -> Result<(), Closed> {
        self.send(WatchResponse {
            header: self.header(),
            watch_id: id,
            canceled: true,
            compact_revision: compacted,
            cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
            ..Default::default()
        })
        .await
    }

    /// The stream fell behind the broadcast: serve everyone from history.
    async fn catch_up(&mut self) -> Result<(), Closed> {
        self.replay(None).await
    }

    /// Deliver history from the oldest revision `only` (or every watcher) needs.
    /// Each chunk is read with the compaction revision of its moment: a
    /// watcher that still needs compacted revisions is cancelled with the
    /// compaction error rather than handed a gap (a compaction may land
    /// between two chunks of a long replay).
    async fn replay(&mut self, only: Option<i64>) -> Result<(), Closed> {
        loop {
            let from = self
                .watchers
                .iter()
                .filter(|(id, _)| only.is_none_or(|o| o == **id))
                .map(|(_, w)| w.next_rev)
                .min();
            let Some(from) = from else { return Ok(()) };
            let chunk = match self.node.watch_history(from) {
                Ok(c) => c,
                Err(e) => {
                    let _ = self.out.send(Err(e.into())).await;
                    return Err(Closed);
                }
            };
            if from < chunk.compacted {
                self.cancel_compacted(only, chunk.compacted).await?;
                continue;
            }
            if chunk.events.is_empty() {
                return Ok(());
            }
            self.deliver_to(&chunk.events, only).await?;
        }
    }

    /// Cancel every watcher (or only `only`) that needs a revision before
    /// `compacted`, with the compaction error.
    async fn cancel_compacted(&mut self, only: Option<i64>, compacted: i64) -> Result<(), Closed> {
        let behind: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(id, w)| only.is_none_or(|o| o == **id) && w.next_rev < compacted)
            .map(|(id, _)| *id)
            .collect();
        for id in behind {
            self.watchers.remove(&id);
            self.send_compacted(id, compacted).await?;
        }
        Ok(())
    }

    async fn deliver(&mut self, events: &[Event]) -> Result<(), Closed> {
        self.deliver_to(events, None).await
    }

    /// Send each watcher (or only `only`) the events it wants from `events`
    /// (sorted by revision, never a partial revision), then move it past them.
    async fn deliver_to(&mut self, events: &[Event], only: Option<i64>) -> Result<(), Closed> {
        let Some(last_rev) = events.last().map(revision_of) else {
            return Ok(());
        };
        let ids: Vec<i64> = self
            .watchers
            .keys()
            .copied()
            .filter(|id| only.is_none_or(|o| o == *id))
            .collect();
        for id in ids {
            let Some(w) = self.watchers.get(&id) else {
                continue;
            };
            let mut picked: Vec<Event> = events.iter().filter(|e| w.wants(e)).cloned().collect();
            let (want_prev, fragment) = (w.prev_kv, w.fragment);
            if let Some(w) = self.watchers.get_mut(&id) {
                w.next_rev = w.next_rev.max(last_rev + 1);
                w.sent_since_tick |= !picked.is_empty();
            }
            if picked.is_empty() {
                continue;
            }
            if want_prev {
                for e in &mut picked {
                    let kv = e.kv.as_ref().expect("wanted events have a kv");
                    e.prev_kv = self.node.prev_kv(&kv.key, kv.mod_revision);
                }
            }
            self.send_events(id, picked, last_rev, fragment).await?;
        }
        Ok(())
    }

    async fn send_events(
        &self,
        id: i64,
        events: Vec<Event>,
        revision: i64,
        fragment: bool,
    ) -> Result<(), Closed> {
        let header = Some(self.node.header(revision));
        let limit = self.node.limits().max_request_bytes;
        let total: usize = events.iter().map(|e| e.encoded_len()).sum();
        if !fragment || total <= limit {
            return self
                .send(WatchResponse {
                    header,
                    watch_id: id,
                    events,
                    ..Default::default()
                })
                .await;
        }
        // Split into responses under the limit; all but the last say "more follows".
        let mut parts: Vec<Vec<Event>> = vec![Vec::new()];
        let mut size = 0;
        for e in events {
            let n = e.encoded_len();
            if size + n > limit && !parts.last().expect("one part").is_empty() {
                parts.push(Vec::new());
                size = 0;
            }
            size += n;
            parts.last_mut().expect("one part").push(e);
        }
        let count = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            self.send(WatchResponse {
                header,
                watch_id: id,
                events: part,
                fragment: i + 1 < count,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }

    /// Progress notifications for watchers that asked for them and saw nothing.
    async fn progress_tick(&mut self) -> Result<(), Closed> {
        let current = self.node.mvcc().current_revision();
        let due: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.progress_notify && !w.sent_since_tick && w.next_rev > current)
            .map(|(id, _)| *id)
            .collect();
        for w in self.watchers.values_mut() {
            w.sent_since_tick = false;
        }
        for id in due {
            self.send(WatchResponse {
                header: Some(self.node.header(current)),
                watch_id: id,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }
}
