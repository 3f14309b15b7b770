//! Requests only the leader can carry out: membership changes (add as learner
//! or voter, promote, remove) and lease keep-alives and TTLs (the leader keeps
//! lease deadlines; see `crate::lease`); and, before a planned stop, handing
//! leadership over (`hand_over_before_stop`).
//!
//! etcd's rules, checked before anything is proposed: ids and peer URLs are
//! unique, only a learner that has caught up (90% of the leader's log, as etcd)
//! is promoted, the last voter is never removed, and a leader asked to remove
//! itself first hands leadership to the most up-to-date voter, so the cluster
//! never waits out an election timeout because of a planned removal; and, as
//! etcd's strict reconfiguration check, a new voter (added or promoted) is
//! refused when the voters the leader hears from would not be a quorum of the
//! grown membership: three adds of unreachable members to three voters would
//! otherwise leave a cluster that can commit nothing, not even their removal.

use std::collections::BTreeSet;

use openraft::ChangeMembers;
use serde::Deserialize;
use serde::Serialize;

use crate::errors::ApiError;
use crate::lease::Renewal;
use crate::node::Node;
use crate::raft::Command;
use crate::raft::Member;
use crate::raft::NodeId;

/// A request a follower hands to the leader.
#[derive(Debug, Serialize, Deserialize)]
pub enum Forwarded {
    Write(Command),
    AddMember {
        id: NodeId,
        peer_url: String,
        learner: bool,
    },
    PromoteMember {
        id: NodeId,
    },
    RemoveMember {
        id: NodeId,
    },
    LeaseKeepAlive {
        id: i64,
    },
    LeaseTimeToLive {
        id: i64,
    },
}

/// The leader's answer to a [`Forwarded`] request.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardReply {
    Write(crate::raft::CommandResult),
    Done,
    /// A lease's (remaining, granted) TTL in seconds; `None` if it does not exist.
    Lease(Option<(i64, i64)>),
    Error {
        code: i32,
        message: String,
    },
}

/// A learner is ready when it has at least this share of the leader's log.
const LEARNER_READY_PERCENT: u64 = 90;

/// Carry out a forwarded request on this member, which believes it leads.
pub async fn run_on_leader(node: &Node, req: &Forwarded) -> ForwardReply {
    if !node.is_leader() {
        return reply_error(ApiError::not_leader());
    }
    let result = match req {
        Forwarded::Write(cmd) => {
            let checked = cmd
                .0
                .op
                .as_ref()
                .map_or(Ok(()), |op| super::validate::forwarded(op, node.limits()));
            if let Err(e) = checked {
                return reply_error(e);
            }
            return match node.propose_local(cmd.clone()).await {
                Ok(r) => ForwardReply::Write(r),
                Err(e) => reply_error(e.into_api()),
            };
        }
        Forwarded::AddMember {
            id,
            peer_url,
            learner,
        } => add(node, *id, peer_url, *learner).await,
        Forwarded::PromoteMember { id } => promote(node, *id).await,
        Forwarded::RemoveMember { id } => remove(node, *id).await,
        Forwarded::LeaseKeepAlive { id } => {
            if !node.holds_leader_lease().await {
                // Possibly cut off from the cluster, which may have elected
                // another leader: renewing here could outlast its revoke.
                return reply_error(ApiError::no_leader());
            }
            return match node.lease_timers.renew(node.leader_term(), *id) {
                Ok(Renewal::Renewed(ttl)) => ForwardReply::Lease(Some((ttl, ttl))),
                Ok(Renewal::Gone) => ForwardReply::Lease(None),
                Err(e) => reply_error(e),
            };
        }
        Forwarded::LeaseTimeToLive { id } => {
            return match node.lease_timers.remaining(node.leader_term(), *id) {
                Ok(left) => ForwardReply::Lease(left),
                Err(e) => reply_error(e),
            }
        }
    };
    match result {
        Ok(()) => ForwardReply::Done,
        Err(e) => reply_error(e),
    }
}

fn reply_error(e: ApiError) -> ForwardReply {
    ForwardReply::Error {
        code: e.code as i32,
        message: e.message,
    }
}

type ClientWriteError = openraft::errors::ClientWriteError<crate::raft::TypeConfig>;

fn raft_error(
    e: openraft::errors::RaftError<crate::raft::TypeConfig, ClientWriteError>,
) -> ApiError {
    if e.forward_to_leader().is_some() {
        ApiError::leader_changed()
    } else {
        ApiError::new(
            tonic::Code::FailedPrecondition,
            format!("raftkv: membership change failed: {e}"),
        )
    }
}

async fn add(node: &Node, id: NodeId, peer_url: &str, learner: bool) -> Result<(), ApiError> {
    let m = node.raft_metrics();
    let membership = m.membership_config.membership();
    if membership.get_node(&id).is_some() {
        return Err(ApiError::member_exists());
    }
    if membership.nodes().any(|(_, n)| n.peer_url == peer_url) {
        return Err(ApiError::peer_url_exists());
    }
    if !learner {
        enough_reachable_voters(node, &m, id)?;
    }
    let member = Member {
        peer_url: peer_url.to_string(),
    };
    node.raft
        .add_learner(id, member, false)
        .await
        .map_err(raft_error)?;
    if !learner {
        node.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(raft_error)?;
    }
    tracing::info!(member = %format!("{id:x}"), %peer_url, learner, "added member");
    Ok(())
}

/// Refuse to make `joining` a voter unless the voters this leader heard from
/// within the leader timeout (itself, and `joining` if it is one of them)
/// stay a quorum of the membership with `joining` in it.
fn enough_reachable_voters(
    node: &Node,
    m: &openraft::RaftMetrics<crate::raft::TypeConfig>,
    joining: NodeId,
) -> Result<(), ApiError> {
    let mut voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
    voters.insert(joining);
    let last_ack = |id: &NodeId| *m.heartbeat.as_ref()?.get(id)?;
    let heard = |id: &NodeId| {
        *id == node.id
            || last_ack(id)
                .is_some_and(|at| openraft::Instant::elapsed(&*at) <= node.leader_timeout())
    };
    let reachable = voters.iter().filter(|v| heard(v)).count();
    if reachable < voters.len() / 2 + 1 {
        tracing::warn!(
            member = %format!("{joining:x}"),
            reachable,
            voters = voters.len(),
            "refused a new voter: too few reachable voters for a quorum"
        );
        return Err(ApiError::unhealthy_cluster());
    }
    Ok(())
}

async fn promote(node: &Node, id: NodeId) -> Result<(), ApiError> {
    let m = node.raft_metrics();
    let membership = m.membership_config.membership();
    if membership.get_node(&id).is_none() {
        return Err(ApiError::member_not_found());
    }
    if membership.voter_ids().any(|v| v == id) {
        return Err(ApiError::member_not_learner());
    }
    let leader_last = m.last_log_index.unwrap_or(0);
    let matched = m
        .replication
        .as_ref()
        .and_then(|r| r.get(&id).cloned().flatten())
        .map_or(0, |log_id| log_id.index);
    if matched * 100 < leader_last * LEARNER_READY_PERCENT {
        return Err(ApiError::learner_not_ready());
    }
    enough_reachable_voters(node, &m, id)?;
    node.raft
        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
        .await
        .map_err(raft_error)?;
    tracing::info!(member = %format!("{id:x}"), "promoted learner to voter");
    Ok(())
}

async fn remove(node: &Node, id: NodeId) -> Result<(), ApiError> {
    let m = node.raft_metrics();
    let membership = m.membership_config.membership();
    if membership.get_node(&id).is_none() {
        return Err(ApiError::member_not_found());
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let is_voter = voters.contains(&id);
    if is_voter && voters.len() == 1 {
        return Err(ApiError::last_voter());
    }
    if id == node.id {
        // Hand leadership to the most caught-up other voter; the caller retries
        // the removal on the new leader.
        let successor = successor(&m, &voters)
            .ok_or_else(|| ApiError::unavailable("no other voter to hand leadership to"))?;
        tracing::info!(to = %format!("{successor:x}"), "transferring leadership before removing this member");
        node.raft
            .trigger()
            .transfer_leader(successor)
            .await
            .map_err(ApiError::unavailable)?;
        // Nothing was proposed: the caller retries on the new leader.
        return Err(ApiError::not_leader());
    }
    let change = if is_voter {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    node.raft
        .change_membership(change, false)
        .await
        .map_err(raft_error)?;
    tracing::info!(member = %format!("{id:x}"), "removed member");
    Ok(())
}

/// The other voter whose log matches the leader's furthest: the one that can
/// take over soonest.
fn successor(
    m: &openraft::RaftMetrics<crate::raft::TypeConfig>,
    voters: &BTreeSet<NodeId>,
) -> Option<NodeId> {
    m.replication.as_ref().and_then(|r| {
        r.iter()
            .filter(|(v, _)| **v != m.id && voters.contains(v))
            .max_by_key(|(_, matched)| matched.as_ref().map_or(0, |l| l.index))
            .map(|(v, _)| *v)
    })
}

/// Before a planned stop (SIGTERM), a leader hands leadership to the most
/// caught-up other voter and waits, up to one leader timeout, until it has
/// taken over, as etcd does: the cluster then writes again within a round
/// trip or two instead of waiting out an election timeout. Returns the new
/// leader, or `None` if this member did not lead, had no one to hand over to,
/// or the handover did not finish in time (the stop goes on regardless).
pub async fn hand_over_before_stop(node: &Node) -> Option<NodeId> {
    let m = node.raft_metrics();
    if m.current_leader != Some(node.id) {
        return None;
    }
    let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
    let to = successor(&m, &voters)?;
    tracing::info!(to = %format!("{to:x}"), "stopping: handing leadership over first");
    if let Err(e) = node.raft.trigger().transfer_leader(to).await {
        tracing::warn!("stopping: leadership handover failed: {e}");
        return None;
    }
    let taken_over = node
        .raft
        .wait(Some(node.leader_timeout()))
        .metrics(
            |m| m.current_leader.is_some_and(|l| l != node.id),
            "another member leads",
        )
        .await;
    match taken_over {
        Ok(_) => Some(to),
        Err(e) => {
            tracing::warn!("stopping: leadership handover did not finish: {e}");
            None
        }
    }
}
