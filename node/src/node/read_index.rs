//! Linearizable reads share read indexes, in rounds.
//!
//! A linearizable read waits until the local state machine has applied the
//! leader's commit index as of some moment after the read began (the read
//! index, confirmed by a quorum). Asking for one per read costs a quorum round
//! per read, and on a follower also a call to the leader. As etcd's
//! linearizable read loop does, a member keeps at most one request for a read
//! index in flight: reads that arrive meanwhile wait for the next round, which
//! serves all of them at once. Every read's round starts after the read was
//! queued, so the index it gets is one a read-index request of its own could
//! have returned.
//!
//! With 1000 concurrent readers on 3 members, ~26,000 read-index requests a
//! second became ~1,200 rounds of ~22 reads each, and server CPU per read fell
//! from 65 to ~45 us (BENCHMARKS.md; `raftkv_read_index_rounds_total` and
//! `raftkv_read_index_reads_total` on `/metrics` show the batching).

use std::sync::atomic::Ordering;
use std::sync::Weak;

use tokio::sync::mpsc;
use tokio::sync::oneshot;

use crate::errors::ApiError;
use crate::node::Node;

/// A round's outcome: the read index, `None` when no leader could answer yet
/// (nothing was read; the caller retries), or why the round failed.
pub type ReadIndex = Result<Option<u64>, ApiError>;

type Waiter = oneshot::Sender<ReadIndex>;

/// The reads waiting for the next round; [`serve_rounds`] runs the rounds.
pub struct ReadIndexRounds {
    queue: mpsc::UnboundedSender<Waiter>,
}

impl ReadIndexRounds {
    /// The queue and its receiving end, for [`serve_rounds`].
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Waiter>) {
        let (queue, rx) = mpsc::unbounded_channel();
        (Self { queue }, rx)
    }

    /// A read index obtained after this call began.
    pub async fn read_index(&self) -> ReadIndex {
        let (tx, rx) = oneshot::channel();
        self.queue.send(tx).map_err(|_| stopping())?;
        rx.await.unwrap_or_else(|_| Err(stopping()))
    }
}

fn stopping() -> ApiError {
    ApiError::unavailable("raftkv: the member is stopping")
}

/// Run read-index rounds for `node` until it is dropped: take every waiting
/// read, get one read index for all of them, hand it to each.
pub async fn serve_rounds(node: Weak<Node>, mut queue: mpsc::UnboundedReceiver<Waiter>) {
    while let Some(first) = queue.recv().await {
        let mut waiting = vec![first];
        while let Ok(more) = queue.try_recv() {
            waiting.push(more);
        }
        let Some(node) = node.upgrade() else { return };
        let outcome = node.read_index_round().await;
        let metrics = &node.metrics;
        metrics.read_index_rounds.fetch_add(1, Ordering::Relaxed);
        metrics
            .read_index_reads
            .fetch_add(waiting.len() as u64, Ordering::Relaxed);
        drop(node);
        for waiter in waiting {
            // A reader that gave up (its request was cancelled) is gone.
            let _ = waiter.send(outcome.clone());
        }
    }
}
