//! Compaction while a watcher catches up (issue 17, finding 3), under the
//! nemesis's faults.
//!
//! A member replays a watcher's history in chunks; a compaction between two
//! chunks removes revisions the watcher has not been sent yet. The watcher
//! must then be cancelled with the compaction revision, never handed a gap.
//! One client arranges that race, round after round: it opens a watch of
//! the whole keyspace from just past the last compaction, a few thousand
//! revisions back, with `prev_kv` (a lookup per event, so the replay takes a
//! while), and at once compacts two thirds of the way in. Then it reads,
//! checking that revisions come in order without a gap until it has caught
//! up or the watch is cancelled as compacted.
//!
//! Compactions stay [`MARGIN`] revisions behind every one of the campaign's
//! own watchers ([`WatchProgress`]), which need all history from their start.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{Client, GetOptions, WatchOptions};

use crate::fault::catch_up_check::CatchUpRound;
use crate::fault::history::Recorder;
use crate::grpc::connect_with;
use crate::tls::ClientTls;

/// How far behind the slowest campaign watcher a compaction stays.
pub const MARGIN: i64 = 500;

/// The least history a round replays: a few chunks (a member sends 1000
/// events per chunk).
const LEAST_REPLAY: i64 = 2500;

/// The revision each of the campaign's watchers has seen up to.
#[derive(Clone, Default)]
pub struct WatchProgress(Arc<std::sync::Mutex<Vec<Arc<AtomicI64>>>>);

impl WatchProgress {
    /// A new watcher's counter, starting at `seen`.
    pub fn track(&self, seen: i64) -> Arc<AtomicI64> {
        let counter = Arc::new(AtomicI64::new(seen));
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(counter.clone());
        counter
    }

    /// The revision every watcher has seen.
    fn slowest(&self) -> Option<i64> {
        let counters = self.0.lock().unwrap_or_else(|p| p.into_inner());
        counters.iter().map(|c| c.load(Ordering::SeqCst)).min()
    }
}

/// The client of this module's docs.
pub struct CatchUpClient {
    pub endpoints: Vec<String>,
    pub tls: Option<ClientTls>,
    pub op_timeout: Duration,
    pub progress: WatchProgress,
    /// The campaign's first revision (revision 1 of a new store is no KV
    /// change: a watch from it starts at 2).
    pub start_revision: i64,
    pub stop: Arc<AtomicBool>,
    pub rounds: Recorder<CatchUpRound>,
}

impl CatchUpClient {
    pub async fn run(self) {
        let mut compacted = self.start_revision - 1;
        let mut member = 0;
        while !self.stop.load(Ordering::SeqCst) {
            member = (member + 1) % self.endpoints.len();
            match self.round(&self.endpoints[member], compacted).await {
                Ok(Some(round)) => {
                    compacted = compacted
                        .max(round.compacted_at)
                        .max(round.cancelled_at.unwrap_or(0));
                    self.rounds.push(round);
                }
                // Not enough new history yet, or a fault got in the way.
                Ok(None) | Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    async fn connect(&self, endpoint: &str) -> Result<Client> {
        connect_with(&[endpoint.to_string()], self.tls.as_ref(), self.op_timeout).await
    }

    /// One round through `endpoint`, from just past `compacted`; `None` when
    /// there is too little history to replay since then.
    async fn round(&self, endpoint: &str, compacted: i64) -> Result<Option<CatchUpRound>> {
        let Some(slowest) = self.progress.slowest() else {
            return Ok(None);
        };
        let floor = slowest - MARGIN;
        let start = compacted + 1;
        if floor - start < LEAST_REPLAY {
            return Ok(None);
        }
        let mut client = self.connect(endpoint).await?;
        let head = client
            .get(
                "",
                Some(GetOptions::new().with_all_keys().with_count_only()),
            )
            .await?
            .header()
            .context("a Range response without a header")?
            .revision();
        let options = WatchOptions::new()
            .with_all_keys()
            .with_start_revision(start)
            .with_prev_key();
        let mut stream = client.watch("", Some(options)).await?;
        // The member replays from `start` now; compact two thirds of the way
        // in, while it reads the chunks before that.
        let at = start + (floor - start) * 2 / 3;
        client.compact(at, None).await?;
        let mut round = CatchUpRound {
            member: endpoint.to_string(),
            start,
            target: head,
            next: start,
            compacted_at: at,
            cancelled_at: None,
            problem: None,
        };
        while round.next <= head {
            let resp = tokio::time::timeout(Duration::from_secs(20), stream.message())
                .await
                .context("no watch response for 20 s")??
                .context("the watch stream ended")?;
            round.take(&resp);
            if round.problem.is_some() || round.cancelled_at.is_some() {
                break;
            }
        }
        Ok(Some(round))
    }
}
