//! Carries out the maintenance planner's steps through etcd's API on the
//! members: Compact through the leader (replicated like a write), Defragment
//! on one member (local to it).
//!
//! Repeats are harmless: a compaction to a revision already compacted counts
//! as done, and defragmenting twice only costs time.

use crate::membership::executor::{ExecError, Executor, MemberAddresses};

/// etcd's answer to a compaction at or below the compacted revision.
const ALREADY_COMPACTED: &str = "required revision has been compacted";

impl<A: MemberAddresses> Executor<A> {
    /// Compact the store through the leader at `ordinal`, keeping the newest
    /// `retain` revisions. Returns the revision compacted to, or 0 when there
    /// is not more history than that yet.
    pub async fn compact(&self, ordinal: u32, retain: u64) -> Result<i64, ExecError> {
        let (mut client, endpoint) = self.etcd(ordinal).await?;
        let failed = |call: &'static str, endpoint: &str| {
            let endpoint = endpoint.to_string();
            move |source| ExecError::Etcd {
                call,
                endpoint,
                source,
            }
        };
        let status = client.status().await.map_err(failed("Status", &endpoint))?;
        let current = status.header().map_or(0, |h| h.revision());
        let target = current.saturating_sub(i64::try_from(retain).unwrap_or(i64::MAX));
        if target <= 0 {
            return Ok(0);
        }
        match client.compact(target, None).await {
            Ok(_) => Ok(target),
            Err(e) if e.to_string().contains(ALREADY_COMPACTED) => Ok(target),
            Err(e) => Err(failed("Compact", &endpoint)(e)),
        }
    }

    /// Defragment the member at `ordinal`.
    pub async fn defragment(&self, ordinal: u32) -> Result<(), ExecError> {
        let (mut client, endpoint) = self.etcd(ordinal).await?;
        client
            .defragment()
            .await
            .map_err(|source| ExecError::Etcd {
                call: "Defragment",
                endpoint,
                source,
            })?;
        Ok(())
    }
}
