//! The leader's lease expiry loop: the deadlines live in `crate::lease`; this
//! member, while it leads, proposes a revoke for every lease past its deadline.

use std::sync::Arc;
use std::time::Duration;

use crate::proto::etcdserverpb::LeaseRevokeRequest;
use crate::proto::raftkvpb;
use crate::raft::Command;

use super::Node;

/// How often the leader looks for expired leases.
const TICK: Duration = Duration::from_millis(100);

/// Runs for the life of the member.
pub async fn run(node: Arc<Node>) {
    loop {
        tokio::time::sleep(TICK).await;
        if !node.is_leader() {
            node.lease_timers.clear();
            continue;
        }
        if let Err(e) = node.lease_timers.sync(node.leader_term()) {
            tracing::warn!("reading leases: {e}");
            continue;
        }
        for id in node.lease_timers.expired() {
            let cmd = Command::new(raftkvpb::command::Op::LeaseRevoke(LeaseRevokeRequest {
                id,
            }));
            match node.propose_local(cmd).await {
                Ok(_) => tracing::debug!(lease = %format!("{id:x}"), "lease expired and revoked"),
                // Not leader any more, or a transient failure: the next tick (or
                // the next leader) tries again.
                Err(e) => {
                    tracing::debug!(lease = %format!("{id:x}"), "revoking an expired lease: {:?}", e)
                }
            }
        }
    }
}
