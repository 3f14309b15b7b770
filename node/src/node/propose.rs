//! The write path: a command is proposed on the leader, wherever it is.
//!
//! On the leader a command goes straight to Raft; on a follower it is sent to
//! the leader over the peer port (`Forward`), with membership changes and
//! lease keep-alives, which only the leader carries out. A request is retried
//! only when it certainly was not carried out (no leader yet, or the target
//! was not the leader), never after an outcome that is unknown, so a retry
//! can't apply twice.
//!
//! A client's command carries the auth revision its permissions were checked
//! at (`propose_as`); one that reaches the log after an auth change is
//! refused at apply, and checked and proposed again, as etcd's server does.

use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use tonic::metadata::MetadataMap;

use crate::auth::Caller;
use crate::errors::ApiError;
use crate::proto::raftkvpb;
use crate::proto::raftkvpb::command::Op;
use crate::proto::raftkvpb::command_result::Result as Applied;
use crate::raft::codec;
use crate::raft::Command;
use crate::raft::NodeId;

use super::leader;
use super::leader::ForwardReply;
use super::leader::Forwarded;
use super::Node;
use super::REQUEST_TIMEOUT;

impl Node {
    /// Replicate `op` for `caller`, who passed `check` against this member's
    /// copy of the auth state. If that copy was behind the log (a lagging
    /// member, or an auth change racing the request), the command is refused
    /// at apply; this member then catches up with the leader, looks the
    /// caller up again (`md` holds its token) and runs `check` again, so a
    /// permission revoked before the command commits always wins.
    pub async fn propose_as(
        &self,
        mut caller: Caller,
        md: &MetadataMap,
        op: Op,
        check: impl Fn(&Caller, &Op) -> Result<(), ApiError>,
    ) -> Result<Applied, ApiError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let cmd = Command::stamped(op.clone(), caller.stamp());
            match self.propose(cmd).await {
                Err(e) if e == crate::store::auth::old_revision() && Instant::now() < deadline => {
                    self.read_barrier().await?;
                    caller = self.caller(md).await?;
                    check(&caller, &op)?;
                }
                outcome => return outcome,
            }
        }
    }

    /// Replicate a command and return what applying it produced.
    pub async fn propose(
        &self,
        cmd: Command,
    ) -> Result<raftkvpb::command_result::Result, ApiError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let _pending = Pending::start(&self.metrics.proposals_pending);
        let outcome = self.propose_until(cmd, deadline).await;
        match &outcome {
            Ok(_) => self
                .metrics
                .proposals_committed
                .fetch_add(1, Ordering::Relaxed),
            Err(_) => self
                .metrics
                .proposals_failed
                .fetch_add(1, Ordering::Relaxed),
        };
        match outcome?.0.result {
            Some(raftkvpb::command_result::Result::Error(e)) => Err(e.into()),
            Some(r) => Ok(r),
            None => Err(ApiError::internal("the state machine returned no result")),
        }
    }

    /// Replicate `cmd` through the leader, wherever it is.
    async fn propose_until(
        &self,
        cmd: Command,
        deadline: Instant,
    ) -> Result<crate::raft::CommandResult, ApiError> {
        match self
            .on_leader_until(Forwarded::Write(cmd), deadline)
            .await?
        {
            ForwardReply::Write(r) => Ok(r),
            _ => Err(ApiError::internal("unexpected reply to a forwarded write")),
        }
    }

    /// Propose on this member, which believes it is the leader.
    ///
    /// `NotLeader` (safe to retry) only when nothing was proposed. If leadership
    /// is lost after the proposal, the entry may still commit under the next
    /// leader, so the outcome is unknown: that is etcd's "leader changed", which
    /// clients do not retry blindly either.
    pub async fn propose_local(
        &self,
        cmd: Command,
    ) -> Result<crate::raft::CommandResult, LocalError> {
        if !self.is_leader() {
            return Err(LocalError::NotLeader);
        }
        let started = Instant::now();
        match self.raft.client_write(cmd).await {
            Ok(resp) => {
                self.metrics.proposal.record(started.elapsed());
                Ok(resp.data)
            }
            Err(e) if e.forward_to_leader().is_some() => {
                Err(LocalError::Failed(ApiError::leader_changed()))
            }
            Err(e) => Err(LocalError::Failed(ApiError::unavailable(e))),
        }
    }

    /// Send a request to the leader over the peer port.
    async fn forward(
        &self,
        leader: NodeId,
        url: &str,
        req: &Forwarded,
        deadline: Instant,
    ) -> Result<ForwardReply, ApiError> {
        let mut client = self.peers.client(url)?;
        let mut request = tonic::Request::new(self.peers.payload(leader, req)?);
        request.set_timeout(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100)),
        );
        match client.forward(request).await {
            Ok(reply) => codec::decode(&reply.into_inner().data).map_err(ApiError::internal),
            // No connection means the request was never sent: the caller may
            // retry (the old leader is gone and a new one is being elected).
            Err(s) if never_sent(&s) => Ok(ForwardReply::Error {
                code: tonic::Code::Unavailable as i32,
                message: ApiError::not_leader().message,
            }),
            // The leader may have applied it or not: report, never retry.
            Err(s) if s.code() == tonic::Code::DeadlineExceeded => Err(ApiError::timeout()),
            Err(s) => Err(ApiError::unavailable(format!(
                "forwarding to leader {leader:x}: {}",
                s.message()
            ))),
        }
    }

    /// Run a membership change on the leader, wherever this member is.
    pub async fn change_membership(&self, req: Forwarded) -> Result<(), ApiError> {
        self.on_leader(req).await.map(|_| ())
    }

    /// Carry out `req` on the leader (here, or forwarded), retrying only while
    /// nothing was done (no leader yet, or the target was not the leader).
    pub async fn on_leader(&self, req: Forwarded) -> Result<ForwardReply, ApiError> {
        self.on_leader_until(req, Instant::now() + REQUEST_TIMEOUT)
            .await
    }

    async fn on_leader_until(
        &self,
        req: Forwarded,
        deadline: Instant,
    ) -> Result<ForwardReply, ApiError> {
        loop {
            let (leader, url) = self.await_leader(deadline).await?;
            let reply = if leader == self.id {
                leader::run_on_leader(self, &req).await
            } else {
                let write = matches!(req, Forwarded::Write(_));
                if write {
                    self.metrics
                        .proposals_forwarded
                        .fetch_add(1, Ordering::Relaxed);
                }
                let started = Instant::now();
                let reply = self.forward(leader, &url, &req, deadline).await?;
                if write {
                    self.metrics.forward.record(started.elapsed());
                }
                reply
            };
            match reply {
                ForwardReply::Error { code, message } if is_not_leader(code, &message) => {}
                ForwardReply::Error { code, message } => {
                    return Err(ApiError::new(code.into(), message))
                }
                other => return Ok(other),
            }
            if Instant::now() >= deadline {
                return Err(ApiError::timeout());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Why a request on the local member did not succeed.
#[derive(Debug)]
pub enum LocalError {
    /// This member is not (or no longer) the leader: safe to retry elsewhere.
    NotLeader,
    Failed(ApiError),
}

impl LocalError {
    pub fn into_api(self) -> ApiError {
        match self {
            LocalError::NotLeader => ApiError::not_leader(),
            LocalError::Failed(e) => e,
        }
    }
}

/// Whether a failed peer call certainly never reached the peer: tonic reports a
/// refused or timed-out connection attempt as Unavailable "tcp connect error".
fn never_sent(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::Unavailable && s.message().contains("tcp connect error")
}

/// The reply for "not the leader, nothing proposed", which a member retries.
pub(super) fn is_not_leader(code: i32, message: &str) -> bool {
    code == tonic::Code::Unavailable as i32 && message == ApiError::not_leader().message
}

/// A proposal in flight on this member, counted until it ends, however it
/// ends (a client that goes away drops the future mid-way).
struct Pending<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> Pending<'a> {
    fn start(gauge: &'a std::sync::atomic::AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Pending(gauge)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
