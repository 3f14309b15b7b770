//! How the controller reaches the members of one RaftCluster. A trait, so
//! reconciler tests can stand in for real members; [`LiveMembers`] reaches
//! real ones by their DNS names under the headless Service (over TLS when
//! the cluster has it), through the
//! executors of [`crate::membership`], [`crate::snapshots`] and
//! [`crate::recovery`].

use crate::membership::executor::{ExecError, Executor, MemberObservation, Outcome};
use crate::membership::{MemberEndpoints, Observed, Step};
use crate::recovery::executor::SoloRecovered;
use crate::snapshots::{BackupDone, TakeBackup};
use std::future::Future;
use std::ops::Range;
use std::time::Duration;

/// The member calls a reconcile makes.
pub trait MemberApi: Send + Sync + 'static {
    fn observe(
        &self,
        members: &MemberEndpoints,
        token: &str,
        ordinals: Range<u32>,
    ) -> impl Future<Output = MemberObservation> + Send;

    fn execute(
        &self,
        members: &MemberEndpoints,
        token: &str,
        step: &Step,
        observed: &Observed,
    ) -> impl Future<Output = Result<Outcome, ExecError>> + Send;

    /// SaveBackup on the chosen member, then retention over `ordinals`' listings.
    fn take_backup(
        &self,
        members: &MemberEndpoints,
        take: &TakeBackup,
        retain: u32,
        ordinals: Vec<u32>,
    ) -> impl Future<Output = Result<BackupDone, ExecError>> + Send;

    /// etcd MoveLeader on the leader at `from`: hand leadership to member `to`.
    fn move_leader(
        &self,
        members: &MemberEndpoints,
        from: u32,
        to: u64,
    ) -> impl Future<Output = Result<(), ExecError>> + Send;

    /// etcd Compact through the leader at `leader`, keeping `retain`
    /// revisions: the revision compacted to (0: nothing to compact yet).
    fn compact(
        &self,
        members: &MemberEndpoints,
        leader: u32,
        retain: u64,
    ) -> impl Future<Output = Result<i64, ExecError>> + Send;

    /// etcd Defragment on the member at `ordinal`.
    fn defragment(
        &self,
        members: &MemberEndpoints,
        ordinal: u32,
    ) -> impl Future<Output = Result<(), ExecError>> + Send;

    /// Admin.RecoverSolo on the member at `ordinal`.
    fn recover_solo(
        &self,
        members: &MemberEndpoints,
        ordinal: u32,
        min_leaderless: Duration,
    ) -> impl Future<Output = Result<SoloRecovered, ExecError>> + Send;
}

/// Real members, reached by their DNS names under the headless Service.
pub struct LiveMembers;

impl MemberApi for LiveMembers {
    async fn observe(
        &self,
        members: &MemberEndpoints,
        token: &str,
        ordinals: Range<u32>,
    ) -> MemberObservation {
        Executor::new(members.clone(), token)
            .observe(ordinals)
            .await
    }

    async fn execute(
        &self,
        members: &MemberEndpoints,
        token: &str,
        step: &Step,
        observed: &Observed,
    ) -> Result<Outcome, ExecError> {
        Executor::new(members.clone(), token)
            .execute(step, observed)
            .await
    }

    async fn take_backup(
        &self,
        members: &MemberEndpoints,
        take: &TakeBackup,
        retain: u32,
        ordinals: Vec<u32>,
    ) -> Result<BackupDone, ExecError> {
        // A backup streams the whole store; give it more than one call's default.
        Executor::new(members.clone(), "")
            .with_timeout(Duration::from_secs(120))
            .take_backup(take, &members.names.cluster, retain, ordinals)
            .await
    }

    async fn move_leader(
        &self,
        members: &MemberEndpoints,
        from: u32,
        to: u64,
    ) -> Result<(), ExecError> {
        // The node waits up to its request timeout (7 s) for the transfer.
        Executor::new(members.clone(), "")
            .with_timeout(Duration::from_secs(15))
            .move_leader(from, to)
            .await
    }

    async fn compact(
        &self,
        members: &MemberEndpoints,
        leader: u32,
        retain: u64,
    ) -> Result<i64, ExecError> {
        Executor::new(members.clone(), "")
            .compact(leader, retain)
            .await
    }

    async fn defragment(&self, members: &MemberEndpoints, ordinal: u32) -> Result<(), ExecError> {
        // Defragmenting rewrites the member's store: more than a call's default.
        Executor::new(members.clone(), "")
            .with_timeout(Duration::from_secs(120))
            .defragment(ordinal)
            .await
    }

    async fn recover_solo(
        &self,
        members: &MemberEndpoints,
        ordinal: u32,
        min_leaderless: Duration,
    ) -> Result<SoloRecovered, ExecError> {
        Executor::new(members.clone(), "")
            .with_timeout(Duration::from_secs(60))
            .recover_solo(ordinal, min_leaderless)
            .await
    }
}
