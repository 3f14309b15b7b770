//! Carries out the one recovery step that talks to a member: Admin.RecoverSolo.
//! The Kubernetes steps (resetting members) are the controller's; in tests, the
//! pod stand-in's.

use crate::membership::admin::RecoverSoloRequest;
use crate::membership::executor::{ExecError, Executor, MemberAddresses};
use std::time::Duration;

/// What RecoverSolo kept, as the member reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoloRecovered {
    pub cluster_id: u64,
    pub epoch: u64,
    pub last_applied_index: u64,
    pub revision: i64,
    pub key_count: u64,
    /// The member's own account (what was kept, what may be lost).
    pub report: String,
}

impl<A: MemberAddresses> Executor<A> {
    /// Admin.RecoverSolo on the member at `ordinal`. The member itself refuses
    /// (FAILED_PRECONDITION) if it sees a leader or has had none for less than
    /// `min_leaderless`, a second check next to the planner's.
    pub async fn recover_solo(
        &self,
        ordinal: u32,
        min_leaderless: Duration,
    ) -> Result<SoloRecovered, ExecError> {
        let (mut admin, endpoint) = self.admin(ordinal).await?;
        let r = admin
            .recover_solo(RecoverSoloRequest {
                min_leaderless_millis: min_leaderless.as_millis() as u64,
            })
            .await
            .map_err(|status| ExecError::Admin {
                call: "RecoverSolo",
                endpoint,
                status,
            })?
            .into_inner();
        Ok(SoloRecovered {
            cluster_id: r.cluster_id,
            epoch: r.epoch,
            last_applied_index: r.last_applied_index,
            revision: r.revision,
            key_count: r.key_count,
            report: r.report,
        })
    }
}
