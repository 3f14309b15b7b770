//! What a serving member does beside answering requests: publish its name and
//! client URL through the log, keep `leader_seen` current, stop Raft once
//! fenced, notice its own removal, and count leader changes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::node::Node;
use crate::proto::raftkvpb;
use crate::raft::Command;

pub(super) fn spawn(node: &Arc<Node>, client_url: String, stop_rx: watch::Receiver<bool>) {
    tokio::spawn(publish_attributes(node.clone(), client_url, stop_rx));
    tokio::spawn(count_leader_changes(node.clone()));
    tokio::spawn(note_leader_seen(node.clone()));
    tokio::spawn(stop_raft_when_fenced(node.clone()));
    tokio::spawn(note_own_membership(node.clone()));
    tokio::spawn(probe_membership_when_leaderless(node.clone()));
}

/// Publish this member's name, client URL and data-dir incarnation through
/// the log (as etcd does the first two) once it is a member, and again
/// whenever what the store holds differs.
async fn publish_attributes(node: Arc<Node>, client_url: String, stop: watch::Receiver<bool>) {
    let wanted = raftkvpb::MemberAttributes {
        id: node.id(),
        name: node.name().to_string(),
        client_urls: vec![client_url],
        incarnation: node.incarnation().own(),
    };
    while !*stop.borrow() {
        let is_member = crate::api::cluster::member_list(&node)
            .iter()
            .any(|m| m.id == node.id());
        match node.member_attributes(node.id()) {
            Some(current) if current == wanted => {}
            _ if is_member && node.leader().is_some() => {
                let cmd = Command::new(raftkvpb::command::Op::SetMemberAttributes(wanted.clone()));
                if let Err(e) = node.propose(cmd).await {
                    tracing::debug!("publishing member attributes: {e}");
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Keep `leader_seen` current: RecoverSolo asks how long no leader was known.
async fn note_leader_seen(node: Arc<Node>) {
    loop {
        if node.leader().is_some() {
            node.leader_seen().touch();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fenced member (see `crate::epoch`) stops taking part in Raft at once.
async fn stop_raft_when_fenced(node: Arc<Node>) {
    node.epoch().wait_fenced().await;
    if let Err(e) = node.raft().shutdown().await {
        tracing::warn!("raft shutdown after fencing: {e}");
    }
}

/// Keep `crate::removal` told which membership this member holds (at once:
/// a refusal is judged against it).
async fn note_own_membership(node: Arc<Node>) {
    use openraft::type_config::async_runtime::WatchReceiver;
    let mut rx = node.raft().metrics();
    loop {
        {
            let m = rx.borrow_watched();
            let config = &m.membership_config;
            let index = config.log_id().as_ref().map_or(0, |l| l.index);
            let listed = config.membership().get_node(&node.id()).is_some();
            node.removal().note_membership(index, listed);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// A member that misses its leader asks the others whether it is still a
/// member (see `crate::removal`).
async fn probe_membership_when_leaderless(node: Arc<Node>) {
    loop {
        tokio::time::sleep(node.leader_timeout()).await;
        if node.epoch().fenced().is_none() && node.leader().is_none() {
            node.probe_membership().await;
        }
    }
}

async fn count_leader_changes(node: Arc<Node>) {
    use openraft::type_config::async_runtime::WatchReceiver;
    let mut rx = node.raft().metrics();
    let mut last = rx.borrow_watched().current_leader;
    while rx.changed().await.is_ok() {
        let leader = rx.borrow_watched().current_leader;
        if leader != last {
            node.metrics()
                .leader_changes
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(leader = ?leader.map(|l| format!("{l:x}")), "leader changed");
            last = leader;
        }
    }
}
