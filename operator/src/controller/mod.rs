//! The kube-runtime controller for RaftClusters: reconcile and error policy.
//!
//! One reconcile is a list of phases (see [`apply`]), each a method of a
//! [`Reconciler`](reconciler::Reconciler) that holds what they share: with
//! TLS, make sure the certificates exist and are current; make
//! sure the owned objects exist (server-side apply), observe the StatefulSet,
//! the volumes and the members, let solo recovery act if it was asked for,
//! carry out at most one membership step, restart at most one pod on an old
//! template, expand volumes that ask for less than the spec, take a backup
//! that is due, compact or defragment when scheduled, write status, and requeue soon while a change is in flight.
//!
//! Deciding is never done here: the planners of [`crate::membership`],
//! [`crate::recovery`], [`crate::rollout`], [`crate::snapshots`],
//! [`crate::maintenance`] and [`crate::volumes`] are pure functions of what
//! was observed; this module calls them and carries their steps out.

mod backups;
mod certificates;
mod context;
mod kube_ops;
mod maintenance;
mod reconciler;
mod recovery;
mod report;
mod rollout;
mod volumes;

pub use crate::members::{LiveMembers, MemberApi};
pub use crate::Error;
pub use context::Context;

use crate::crd::{RaftCluster, VolumeRetention};
use crate::membership::{plan_next_step, Plan};
use crate::metrics::Metrics;
use crate::naming::{ClusterNames, MANAGER};
use crate::recovery::RecoveryPlan;
use crate::rollout::RolloutPlan;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use reconciler::Reconciler;
use std::sync::Arc;
use std::time::Duration;

/// The finalizer the operator puts on every RaftCluster.
pub const FINALIZER: &str = "raftkv.io/cleanup";

/// Requeue while a change is in flight (a pod starting, a learner catching up).
pub const REQUEUE_BUSY: Duration = Duration::from_secs(3);
/// Requeue while refused (waiting for the cluster to heal).
pub const REQUEUE_BLOCKED: Duration = Duration::from_secs(20);
/// Re-check while a recovery request waits for proof that quorum is lost.
pub const REQUEUE_RECOVERY_WAIT: Duration = Duration::from_secs(5);
/// Re-check a converged cluster's health this often.
pub const REQUEUE_IDLE: Duration = Duration::from_secs(60);

/// Reconcile one RaftCluster (behind its finalizer).
pub async fn reconcile<M: MemberApi>(
    rc: Arc<RaftCluster>,
    ctx: Arc<Context<M>>,
) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    let ns = rc.namespace().unwrap_or_else(|| "default".to_string());
    let api: Api<RaftCluster> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, rc, |event| async {
        match event {
            Finalizer::Apply(rc) => {
                let result = apply(&rc, &ctx).await;
                if let Err(err @ Error::Kube { .. }) = &result {
                    if !err.is_conflict() {
                        report::report_failure(&rc, &ctx, err).await;
                    }
                }
                result
            }
            Finalizer::Cleanup(rc) => cleanup(&rc, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The phases of one reconcile, in order. They start from the RaftCluster
/// as the API server has it, not as the watch cache handed it over: the cache
/// can lag a status written a moment ago, and planning from an older status
/// would repeat recovery steps it records (issue 18, item 7). Status is then
/// written only over that same version.
async fn apply<M: MemberApi>(cached: &RaftCluster, ctx: &Context<M>) -> Result<Action, Error> {
    let Some(rc) = kube_ops::read_current(&ctx.client, cached).await? else {
        return Ok(Action::await_change());
    };
    let mut r = Reconciler::new(&rc, ctx)?;
    r.ensure_certificates().await?;
    let sts = r.apply_owned_objects().await?;
    let (observed, claims) = r.observe(sts.replicas).await?;
    // Solo recovery first: while it resets members or runs RecoverSolo, it
    // owns them and the membership planner waits.
    let mut recovery = r.recover(&observed).await;
    let plan = plan_next_step(&observed);
    tracing::info!(cluster = %r.owned.names.cluster, plan = ?plan, "planned");
    r.finish_recovery(&plan, &mut recovery).await;
    let step = r
        .step_membership(&plan, &observed, recovery.holds_members(), &sts)
        .await;
    let rollout = r
        .roll_out(&sts, &observed, &plan, recovery.holds_members())
        .await;
    let expansion = r.expand_volumes(&claims).await;
    let backups = r.back_up(&observed, recovery.holds_members()).await;
    let maintenance = r.maintain(&observed, recovery.holds_members()).await;
    let rounds = report::Rounds {
        step: &step,
        recovery: &recovery,
        rollout: &rollout,
        expansion: &expansion,
        backups: &backups,
        maintenance: &maintenance,
    };
    r.write_status(&observed, &plan, &rounds).await?;
    if let Some(err) = step.failure.or(recovery.error).or(rollout.error) {
        return Err(err);
    }
    let scheduled = [backups.next_in, maintenance.next_in]
        .into_iter()
        .flatten()
        .min();
    let wake = next_wake(&plan, &recovery.plan, scheduled);
    Ok(Action::requeue(match rollout.plan {
        Some(RolloutPlan::UpToDate) => wake,
        _ => wake.min(REQUEUE_BUSY),
    }))
}

/// When to look again: soon while something is in flight, and a little after
/// the next scheduled backup or maintenance step at the latest.
fn next_wake(
    plan: &Plan,
    recovery: &RecoveryPlan,
    next_scheduled_in: Option<Duration>,
) -> Duration {
    let membership_wait = match plan {
        _ if matches!(recovery, RecoveryPlan::Act(_) | RecoveryPlan::Growing) => REQUEUE_BUSY,
        _ if matches!(recovery, RecoveryPlan::Wait(_)) => REQUEUE_RECOVERY_WAIT,
        Plan::Act(_) | Plan::Wait(_) => REQUEUE_BUSY,
        Plan::Refuse(_) => REQUEUE_BLOCKED,
        Plan::Converged => REQUEUE_IDLE,
    };
    next_scheduled_in.map_or(membership_wait, |next| {
        membership_wait.min(next + Duration::from_millis(200))
    })
}

/// The RaftCluster is being deleted. Owned objects go with it through owner
/// references. The volumes stay unless `spec.storage.whenDeleted` is
/// `Delete` (the StatefulSet's retention policy keeps them on deletion), so
/// an accidental delete loses no data. Nothing to undo in Raft.
async fn cleanup<M: MemberApi>(rc: &RaftCluster, ctx: &Context<M>) -> Result<Action, Error> {
    let names = ClusterNames::new(
        rc.name_any(),
        rc.namespace().unwrap_or_else(|| "default".to_string()),
    );
    let kube = kube_ops::KubeOps::new(ctx.client.clone(), ctx.reporter.clone(), rc, names);
    match rc.spec.storage.when_deleted {
        VolumeRetention::Retain => {
            kube.publish(
                EventType::Normal,
                "Deleting",
                "owned objects are garbage-collected; member volumes are kept".to_string(),
            )
            .await;
        }
        VolumeRetention::Delete => {
            let claims = kube.data_claims().await?;
            for &ordinal in claims.keys() {
                kube.delete_volume(ordinal).await?;
            }
            kube.publish(
                EventType::Normal,
                "Deleting",
                format!(
                    "owned objects are garbage-collected; {} member volumes deleted (whenDeleted: Delete)",
                    claims.len()
                ),
            )
            .await;
        }
    }
    Ok(Action::await_change())
}

/// Requeue after a status write lost a race: at once, from the newer version.
pub const REQUEUE_CONFLICT: Duration = Duration::from_millis(200);

/// Log, count, retry later; a lost race is retried at once, not counted.
pub fn error_policy<M: MemberApi>(
    rc: Arc<RaftCluster>,
    error: &Error,
    ctx: Arc<Context<M>>,
) -> Action {
    if error.is_conflict() {
        tracing::info!(cluster = %rc.name_any(), error = %error, "lost a race; reconciling again");
        return Action::requeue(REQUEUE_CONFLICT);
    }
    tracing::warn!(cluster = %rc.name_any(), error = %error, "reconcile failed");
    ctx.metrics.reconcile_errors.inc();
    Action::requeue(Duration::from_secs(10))
}

/// Run the controller until the process is told to stop: over the
/// RaftClusters (and what they own) of `namespace`, or of every namespace.
pub async fn run(client: Client, metrics: Arc<Metrics>, namespace: Option<String>) {
    fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = namespace.as_deref();
    let clusters: Api<RaftCluster> = scoped(&client, ns);
    let ctx = Arc::new(Context {
        client: client.clone(),
        members: LiveMembers,
        reporter: Reporter {
            controller: MANAGER.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        },
        metrics,
    });
    Controller::new(clusters, watcher::Config::default())
        .owns(
            scoped::<StatefulSet>(&client, ns),
            watcher::Config::default(),
        )
        .owns(scoped::<Service>(&client, ns), watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(cluster = %obj.name, "reconciled"),
                Err(err) => tracing::debug!(error = %err, "reconcile error"),
            }
        })
        .await;
}
