//! The kube-runtime controller for RaftClusters: reconcile and error policy.
//!
//! One reconcile: make sure the owned objects exist (server-side apply), observe
//! the StatefulSet, the volumes and the members, ask the planner for the next
//! step, carry out at most that one step (Kubernetes steps here, Raft steps
//! through the executor), publish an event for it, write status, and requeue
//! soon while a change is in flight.

use crate::crd::RaftCluster;
use crate::membership::executor::{ExecError, Executor, MemberObservation, Outcome};
use crate::membership::{plan_next_step, Observed, Plan, Step};
use crate::metrics::Metrics;
use crate::naming::{ClusterNames, DATA_VOLUME, MANAGER};
use crate::recovery::executor::SoloRecovered;
use crate::recovery::{self, RecoveryPlan};
use crate::resources::{self, BuildError, Owned};
use crate::snapshots;
use crate::snapshots::{BackupDone, TakeBackup};
use crate::status::{
    build_status, step_reason, with_reconcile_failure, ExtraCondition, StatusInput,
    RECONCILE_FAILED,
};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use std::future::Future;
use std::ops::Range;
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

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building objects: {0}")]
    Build(#[from] BuildError),
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{step:?} failed: {source}")]
    Step {
        step: Step,
        #[source]
        source: ExecError,
    },
    #[error("solo recovery: {source}")]
    Recovery {
        #[source]
        source: ExecError,
    },
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

/// The members of one RaftCluster, as the controller reaches them. Injectable
/// so reconciler tests can stand in for real members.
pub trait MemberApi: Send + Sync + 'static {
    fn observe(
        &self,
        names: &ClusterNames,
        token: &str,
        ordinals: Range<u32>,
    ) -> impl Future<Output = MemberObservation> + Send;

    fn execute(
        &self,
        names: &ClusterNames,
        token: &str,
        step: &Step,
        observed: &Observed,
    ) -> impl Future<Output = Result<Outcome, ExecError>> + Send;

    /// SaveBackup on the chosen member, then retention over `ordinals`' listings.
    fn take_backup(
        &self,
        names: &ClusterNames,
        take: &TakeBackup,
        retain: u32,
        ordinals: Vec<u32>,
    ) -> impl Future<Output = Result<BackupDone, ExecError>> + Send;

    /// Admin.RecoverSolo on the member at `ordinal`.
    fn recover_solo(
        &self,
        names: &ClusterNames,
        ordinal: u32,
        min_leaderless: Duration,
    ) -> impl Future<Output = Result<SoloRecovered, ExecError>> + Send;
}

/// Real members, reached by their DNS names under the headless Service.
pub struct LiveMembers;

impl MemberApi for LiveMembers {
    async fn observe(
        &self,
        names: &ClusterNames,
        token: &str,
        ordinals: Range<u32>,
    ) -> MemberObservation {
        Executor::new(names.clone(), token).observe(ordinals).await
    }

    async fn execute(
        &self,
        names: &ClusterNames,
        token: &str,
        step: &Step,
        observed: &Observed,
    ) -> Result<Outcome, ExecError> {
        Executor::new(names.clone(), token)
            .execute(step, observed)
            .await
    }

    async fn take_backup(
        &self,
        names: &ClusterNames,
        take: &TakeBackup,
        retain: u32,
        ordinals: Vec<u32>,
    ) -> Result<BackupDone, ExecError> {
        // A backup streams the whole store; give it more than one call's default.
        Executor::new(names.clone(), "")
            .with_timeout(Duration::from_secs(120))
            .take_backup(take, &names.cluster, retain, ordinals)
            .await
    }

    async fn recover_solo(
        &self,
        names: &ClusterNames,
        ordinal: u32,
        min_leaderless: Duration,
    ) -> Result<SoloRecovered, ExecError> {
        Executor::new(names.clone(), "")
            .with_timeout(Duration::from_secs(60))
            .recover_solo(ordinal, min_leaderless)
            .await
    }
}

/// Shared by every reconcile.
pub struct Context<M> {
    pub client: Client,
    pub members: M,
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
}

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
                    report_failure(&rc, &ctx, err).await;
                }
                result
            }
            Finalizer::Cleanup(rc) => cleanup(&rc, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// A reconcile the API server refused stops before status is computed; say
/// so where users look (a `ReconcileFailed` condition and a Warning event),
/// not only in the operator's log. Best effort: reporting must not hide the
/// error itself.
async fn report_failure<M: MemberApi>(rc: &RaftCluster, ctx: &Context<M>, err: &Error) {
    let Error::Kube { source, .. } = err else {
        return;
    };
    let reason = match source {
        kube::Error::Api(status) if !status.reason.is_empty() => status.reason.clone(),
        _ => "KubernetesApiError".to_string(),
    };
    let previous = rc
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let conditions = with_reconcile_failure(
        &previous,
        &reason,
        err.to_string(),
        rc.metadata.generation,
        Timestamp::now(),
    );
    let ns = rc.namespace().unwrap_or_else(|| "default".to_string());
    let api: Api<RaftCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({ "status": { "conditions": conditions } });
    if let Err(e) = api
        .patch_status(
            &rc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        tracing::warn!(error = %e, "writing the ReconcileFailed condition failed");
    }
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    publish(
        &recorder,
        &rc.object_ref(&()),
        EventType::Warning,
        RECONCILE_FAILED,
        err.to_string(),
    )
    .await;
}

/// Log, count, retry later.
pub fn error_policy<M: MemberApi>(
    rc: Arc<RaftCluster>,
    error: &Error,
    ctx: Arc<Context<M>>,
) -> Action {
    tracing::warn!(cluster = %rc.name_any(), error = %error, "reconcile failed");
    ctx.metrics.reconcile_errors.inc();
    Action::requeue(Duration::from_secs(10))
}

async fn server_side_apply<K>(api: &Api<K>, name: &str, obj: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = ()>
        + Clone
        + Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(kube_err(format!("applying {} {name}", K::kind(&()))))?;
    Ok(())
}

async fn apply<M: MemberApi>(rc: &RaftCluster, ctx: &Context<M>) -> Result<Action, Error> {
    let owned = Owned::of(rc)?;
    let names = owned.names.clone();
    let ns = names.namespace.as_str();
    let client = ctx.client.clone();
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let token = rc.metadata.uid.clone().unwrap_or_default();

    server_side_apply(
        &services,
        &names.peer_service(),
        &resources::peer_service(&owned),
    )
    .await?;
    server_side_apply(
        &services,
        &names.client_service(),
        &resources::client_service(&owned),
    )
    .await?;
    server_side_apply(
        &pdbs,
        &names.pod_disruption_budget(),
        &resources::pod_disruption_budget(&owned),
    )
    .await?;

    // The replica count is the planner's: keep what the StatefulSet has.
    let current = statefulsets
        .get_opt(&names.statefulset())
        .await
        .map_err(kube_err("reading the StatefulSet"))?;
    let sts_replicas = current
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.replicas)
        .map(|r| r.max(0) as u32);
    let replicas = sts_replicas.unwrap_or(0);
    server_side_apply(
        &statefulsets,
        &names.statefulset(),
        &resources::statefulset(rc, &owned, replicas as i32),
    )
    .await?;

    let claims = pvcs
        .list(&ListParams::default().labels(&names.selector_string()))
        .await
        .map_err(kube_err("listing volumes"))?;
    let prefix = format!("{DATA_VOLUME}-{}-", names.statefulset());
    let volumes = claims
        .items
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter_map(|c| c.name_any().strip_prefix(&prefix)?.parse::<u32>().ok())
        .collect();

    let now = Timestamp::now();
    let status = rc.status.clone().unwrap_or_default();
    let learner_waiting_for = status
        .pending_learner
        .as_ref()
        .and_then(|p| p.since.parse::<Timestamp>().ok())
        .and_then(|since| Duration::try_from(now.duration_since(since)).ok());
    let mut observed = Observed {
        desired_replicas: rc.spec.replicas.max(1) as u32,
        statefulset_replicas: Some(replicas),
        volumes,
        initialized: status.initialized.is_some(),
        learner_waiting_for,
        ..Observed::default()
    };
    ctx.members
        .observe(&names, &token, 0..replicas)
        .await
        .fill(&mut observed);
    observed.restore_from_backup = rc.spec.restore.as_ref().map(|r| r.from_backup.clone());

    let recorder = Recorder::new(client.clone(), ctx.reporter.clone());
    let reference = rc.object_ref(&());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let now_text = now.to_string();

    // Solo recovery first: while it resets members or runs RecoverSolo, it
    // owns them and the membership planner waits.
    let mut recovery = recovery::reconcile::run(
        ctx, rc, &names, &observed, &recorder, &reference, &pvcs, &pods, &now_text,
    )
    .await;

    let plan = plan_next_step(&observed);
    tracing::info!(cluster = %names.cluster, plan = ?plan, "planned");

    let mut step_error = recovery.error.as_ref().map(|e| e.to_string());
    let mut initialized_cluster_id = None;
    let mut failure = None;
    let membership_step = match &plan {
        Plan::Act(step) if !recovery.holds_members() => Some(step),
        _ => None,
    };
    if plan == Plan::Converged
        && !recovery.holds_members()
        && recovery.complete(rc.metadata.generation.unwrap_or(0), &now_text)
    {
        publish(
            &recorder,
            &reference,
            EventType::Normal,
            "SoloRecovery",
            "Completed: back to spec.replicas members".to_string(),
        )
        .await;
    }
    if let Some(step) = membership_step {
        let result = match step {
            Step::ScaleStatefulSet { to, .. } => server_side_apply(
                &statefulsets,
                &names.statefulset(),
                &resources::statefulset(rc, &owned, *to as i32),
            )
            .await
            .map(|()| None),
            Step::DeleteVolume { ordinal } => {
                delete_volume(&pvcs, &names, *ordinal).await.map(|()| None)
            }
            Step::ResetMember { ordinal } => reset_member(&pvcs, &pods, &names, *ordinal)
                .await
                .map(|()| None),
            raft => ctx
                .members
                .execute(&names, &token, raft, &observed)
                .await
                .map(Some)
                .map_err(|source| Error::Step {
                    step: raft.clone(),
                    source,
                }),
        };
        match result {
            Ok(outcome) => {
                if let Some(Outcome::Initialized { cluster_id, .. }) = outcome {
                    initialized_cluster_id = Some(cluster_id);
                }
                if !matches!(outcome, Some(Outcome::NotYet(_))) {
                    ctx.metrics.steps.inc();
                    publish(
                        &recorder,
                        &reference,
                        EventType::Normal,
                        step_reason(step),
                        format!("{step:?}"),
                    )
                    .await;
                }
            }
            Err(err) => {
                step_error = Some(err.to_string());
                publish(
                    &recorder,
                    &reference,
                    EventType::Warning,
                    "StepFailed",
                    err.to_string(),
                )
                .await;
                failure = Some(err);
            }
        }
    }

    let backups = snapshots::reconcile::run(
        ctx,
        rc,
        &names,
        &observed,
        recovery.holds_members(),
        &recorder,
        &reference,
        chrono_now(now),
    )
    .await;

    let recovery_condition = crate::recovery::condition(
        rc.spec.recovery.as_ref().is_some_and(|r| r.solo.is_some()),
        recovery.status.as_ref(),
        &recovery.plan,
    );
    let new_status = build_status(&StatusInput {
        rc,
        names: &names,
        observed: &observed,
        plan: &plan,
        step_error,
        initialized_cluster_id,
        now,
        recovery: recovery.status.clone(),
        last_snapshot: backups.last.clone(),
        extra_conditions: vec![
            ExtraCondition {
                type_: snapshots::CONDITION,
                configured: rc.spec.snapshot.is_some(),
                set: snapshots::condition(&backups.outcome)
                    .map(|(ok, reason, message)| (ok, reason.to_string(), message)),
            },
            ExtraCondition {
                type_: crate::recovery::CONDITION,
                configured: recovery_condition.is_some(),
                set: recovery_condition,
            },
        ],
    });
    let api: Api<RaftCluster> = Api::namespaced(client, ns);
    api.patch_status(
        &names.cluster,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": new_status })),
    )
    .await
    .map_err(kube_err("writing status"))?;

    if let Some(err) = failure.or(recovery.error) {
        return Err(err);
    }
    let membership_wait = match plan {
        _ if matches!(recovery.plan, RecoveryPlan::Act(_) | RecoveryPlan::Growing) => REQUEUE_BUSY,
        _ if matches!(recovery.plan, RecoveryPlan::Wait(_)) => REQUEUE_RECOVERY_WAIT,
        Plan::Act(_) | Plan::Wait(_) => REQUEUE_BUSY,
        Plan::Refuse(_) => REQUEUE_BLOCKED,
        Plan::Converged => REQUEUE_IDLE,
    };
    // Wake up for the next scheduled backup, a little after its instant.
    let wait = backups.next_in.map_or(membership_wait, |next| {
        membership_wait.min(next + Duration::from_millis(200))
    });
    Ok(Action::requeue(wait))
}

/// jiff's `Timestamp` (what k8s-openapi uses) as chrono's (what the schedule uses).
fn chrono_now(now: Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(now.as_millisecond()).unwrap_or_default()
}

pub(crate) async fn delete_volume(
    pvcs: &Api<PersistentVolumeClaim>,
    names: &ClusterNames,
    ordinal: u32,
) -> Result<(), Error> {
    let name = names.pvc(ordinal);
    match pvcs.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Kube {
            what: format!("deleting volume {name}"),
            source,
        }),
    }
}

/// Delete a stale member's volume, then its pod: the StatefulSet re-creates the
/// pod with a fresh, empty volume.
pub(crate) async fn reset_member(
    pvcs: &Api<PersistentVolumeClaim>,
    pods: &Api<Pod>,
    names: &ClusterNames,
    ordinal: u32,
) -> Result<(), Error> {
    delete_volume(pvcs, names, ordinal).await?;
    let name = names.pod(ordinal);
    match pods.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Kube {
            what: format!("deleting pod {name}"),
            source,
        }),
    }
}

/// Events are for humans: failing to publish one must not fail the reconcile.
pub(crate) async fn publish(
    recorder: &Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: reason.to_string(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, reference).await {
        tracing::warn!(error = %err, reason, "publishing event failed");
    }
}

/// The RaftCluster is being deleted. Owned objects go with it through owner
/// references; the volumes stay (the StatefulSet's retention policy keeps them
/// on deletion), so an accidental delete loses no data. Nothing to undo in Raft.
async fn cleanup<M: MemberApi>(rc: &RaftCluster, ctx: &Context<M>) -> Result<Action, Error> {
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    publish(
        &recorder,
        &rc.object_ref(&()),
        EventType::Normal,
        "Deleting",
        "owned objects are garbage-collected; member volumes are kept".to_string(),
    )
    .await;
    Ok(Action::await_change())
}

/// Run the controller until the process is told to stop.
pub async fn run(client: Client, metrics: Arc<Metrics>) {
    let clusters: Api<RaftCluster> = Api::all(client.clone());
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
            Api::<StatefulSet>::all(client.clone()),
            watcher::Config::default(),
        )
        .owns(Api::<Service>::all(client), watcher::Config::default())
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
