//! A member that misses its leader asks the others it knows whether it is
//! still a member: a removed member is never told by the leader, which stops
//! replicating to it (see `crate::removal`). Each member asked answers
//! ClusterInfo, or refuses a non-member naming its membership's log index;
//! `PeerClients::note_refusal` weighs the refusal.

use std::time::Duration;

use crate::node::Node;

/// How long each member asked has to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

impl Node {
    /// Ask every other member of this member's membership, once.
    pub async fn probe_membership(&self) {
        let others: Vec<_> = self.with_raft_metrics(|m| {
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.id)
                .map(|(id, member)| (*id, member.peer_url.clone()))
                .collect()
        });
        for (id, url) in others {
            if let Err(status) = self.peers.ask_cluster_info(id, &url, ASK_TIMEOUT).await {
                self.peers.note_refusal(id, &status);
            }
        }
    }
}
