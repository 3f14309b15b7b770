//! A peer request that claims a newer epoch of our cluster.
//!
//! A newer epoch fences this member for good (see `crate::epoch`), and the
//! claim itself proves nothing: the cluster id is in every client response
//! header, so anyone who reaches the peer port can send a header with a higher
//! epoch. So a claim only starts a check. This member asks the claimed member
//! itself, at the peer URL its own membership records for it, for its
//! epoch; only that member's refusal, naming the newer epoch, fences (as
//! any refusal of our own outgoing calls does, `PeerClients::note_refusal`).
//! A claim from an id outside the membership, or one the member at the
//! recorded URL does not confirm, is logged and ignored.
//!
//! What is left is an attacker who answers at a member's recorded peer URL;
//! peer TLS (`--peer-client-cert-auth`) closes that.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::node::Node;
use crate::raft::NodeId;

/// How long the claimed member has to answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// At most one check runs at a time: a flood of forged claims costs one call.
#[derive(Default)]
pub(super) struct EpochClaims {
    checking: AtomicBool,
}

/// What the claimed member said when asked.
#[derive(Debug, PartialEq)]
enum Answer {
    /// It is not in our membership: nobody to ask.
    Stranger,
    /// It answered at our epoch: the claim was not its own.
    NotConfirmed,
    /// It refused us, and the refusal was weighed (and fenced us if it named
    /// a newer epoch).
    Refused(tonic::Code),
}

impl Node {
    /// Weigh member `from`'s claim of epoch `claimed`, newer than ours, in the
    /// background; the request that carried it is refused meanwhile.
    pub fn weigh_epoch_claim(self: &Arc<Self>, from: NodeId, claimed: u64) {
        if self.epoch_claims.checking.swap(true, Ordering::AcqRel) {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            let answer = node.ask_claimed_member(from).await;
            node.epoch_claims.checking.store(false, Ordering::Release);
            match answer {
                Ok(Answer::Refused(_)) if node.epoch.fenced().is_some() => {}
                Ok(answer) => tracing::warn!(
                    from = %format!("{from:x}"),
                    claimed,
                    ?answer,
                    "ignored a peer request claiming a newer epoch: the member it names did not confirm it"
                ),
                Err(e) => tracing::warn!(
                    from = %format!("{from:x}"),
                    claimed,
                    "ignored a peer request claiming a newer epoch: cannot ask the member it names: {e}"
                ),
            }
        });
    }

    async fn ask_claimed_member(&self, from: NodeId) -> Result<Answer, tonic::Status> {
        let url = self.with_raft_metrics(|m| {
            m.membership_config
                .membership()
                .get_node(&from)
                .map(|member| member.peer_url.clone())
        });
        let Some(url) = url else {
            return Ok(Answer::Stranger);
        };
        match self.peers.ask_cluster_info(from, &url, CHECK_TIMEOUT).await {
            Ok(()) => Ok(Answer::NotConfirmed),
            Err(status) if status.code() == tonic::Code::PermissionDenied => {
                self.peers.note_refusal(from, &status);
                Ok(Answer::Refused(status.code()))
            }
            Err(status) => Err(status),
        }
    }
}
