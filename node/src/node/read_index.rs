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
use std::time::Duration;
use std::time::Instant;

use openraft::raft::ReadPolicy;

use tokio::sync::mpsc;
use tokio::sync::oneshot;

use crate::errors::ApiError;
use crate::raft::codec;
use crate::raft::NodeId;

use super::propose::is_not_leader;
use super::LocalError;
use super::Node;
use super::REQUEST_TIMEOUT;

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

impl Node {
    /// Make the next local read linearizable: afterwards the state machine has
    /// applied everything committed before this call began. The read index
    /// comes from a round shared with concurrent reads (see `read_index`).
    pub async fn read_barrier(&self) -> Result<(), ApiError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            self.await_leader(deadline).await?;
            let round = tokio::time::timeout_at(deadline.into(), self.reads.read_index());
            let index = round.await.map_err(|_| ApiError::timeout())??;
            if let Some(index) = index {
                let wait = deadline.saturating_duration_since(Instant::now());
                return self
                    .raft
                    .wait(Some(wait))
                    .applied_index_at_least(Some(index), "linearizable read")
                    .await
                    .map(|_| ())
                    .map_err(|_| ApiError::timeout());
            }
            if Instant::now() >= deadline {
                return Err(ApiError::timeout());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One read-index round: ask the leader (this member, or over the peer
    /// port) for its read index. `None` when there is no leader to ask yet.
    pub async fn read_index_round(&self) -> ReadIndex {
        let Some((leader, url)) = self.leader() else {
            return Ok(None);
        };
        if leader != self.id {
            let deadline = Instant::now() + REQUEST_TIMEOUT;
            return self.remote_read_index(leader, &url, deadline).await;
        }
        match self.read_index_local().await {
            Ok(i) => Ok(Some(i)),
            Err(LocalError::NotLeader) => Ok(None),
            Err(LocalError::Failed(e)) => Err(e),
        }
    }

    /// The leader's read index: confirm leadership with a quorum (ReadIndex),
    /// then return the log index a read must wait for.
    pub async fn read_index_local(&self) -> Result<u64, LocalError> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(read) => Ok(read.index()),
            Err(e) if e.forward_to_leader().is_some() => Err(LocalError::NotLeader),
            Err(e) => Err(LocalError::Failed(ApiError::unavailable(e))),
        }
    }

    async fn remote_read_index(
        &self,
        leader: NodeId,
        url: &str,
        deadline: Instant,
    ) -> Result<Option<u64>, ApiError> {
        let mut client = self.peers.client(url)?;
        let mut request = tonic::Request::new(self.peers.payload(leader, &())?);
        // One attempt waits at most a leader timeout: past it this member
        // takes its leader for gone anyway, and the caller asks again (maybe
        // another leader) until its own deadline, instead of spending all of
        // it on a link that was cut.
        request.set_timeout(
            deadline
                .saturating_duration_since(Instant::now())
                .min(self.leader_timeout())
                .max(Duration::from_millis(100)),
        );
        let reply = match client.read_index(request).await {
            Ok(reply) => reply,
            // Asking for a read index changes nothing: a failure to reach the
            // leader, or to hear back in time, may be retried until the
            // deadline (e.g. while a new leader is elected).
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Cancelled
                ) =>
            {
                return Ok(None)
            }
            Err(s) => {
                return Err(ApiError::unavailable(format!(
                    "read index from leader {leader:x}: {}",
                    s.message()
                )))
            }
        };
        match codec::decode::<Result<u64, (i32, String)>>(&reply.into_inner().data)
            .map_err(ApiError::internal)?
        {
            Ok(i) => Ok(Some(i)),
            Err((code, message)) if is_not_leader(code, &message) => Ok(None),
            Err((code, message)) => Err(ApiError::new(code.into(), message)),
        }
    }
}
