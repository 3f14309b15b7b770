//! The operator's reconcile, called in this process against a real control
//! plane, in the races a whole journey cannot time: another write to the
//! RaftCluster lands between what the reconcile read and what it writes.
//!
//! `status` is the only record of recovery steps that cannot be undone (a
//! member reset deletes its volume), so a reconcile must never plan from, or
//! write over, a status older than the API server's (issue 18, item 7).
//!
//! The API server, controller-manager and scheduler are real; no node runs
//! (`--no-node`), so no member answers: the reconcile sees a cluster whose
//! pods are not up, which is all these races need. The status an earlier
//! reconcile would have written is written here with `kubectl`, as the
//! operator would write it.

use anyhow::{bail, ensure, Context as _, Result};
use raftkv_operator::controller::{reconcile, Context, LiveMembers, MemberApi};
use raftkv_operator::crd::RaftCluster;
use raftkv_operator::membership::executor::{ExecError, MemberObservation, Outcome};
use raftkv_operator::membership::MemberEndpoints;
use raftkv_operator::membership::{Observed, Step};
use raftkv_operator::metrics::Metrics;
use raftkv_operator::recovery::executor::SoloRecovered;
use raftkv_operator::snapshots::{BackupDone, TakeBackup};
use raftkv_tests::control_plane::{ControlPlane, ControlPlaneOptions, Store};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

const NS: &str = "races";
const T: Duration = Duration::from_secs(60);

/// A RaftCluster of three, with the finalizer the operator puts on first
/// (so a reconcile goes straight to its phases).
fn cluster(name: &str) -> String {
    format!(
        "apiVersion: raftkv.io/v1alpha1
kind: RaftCluster
metadata: {{name: {name}, namespace: {NS}, finalizers: [raftkv.io/cleanup]}}
spec: {{replicas: 3, image: raftkv:0.1.0}}
"
    )
}

/// Merges `status` into the RaftCluster's status, as the operator does.
async fn write_status(plane: &ControlPlane, name: &str, status: serde_json::Value) -> Result<()> {
    let patch = serde_json::json!({ "status": status }).to_string();
    plane
        .kubectl_stdout(&[
            "patch",
            "rkc",
            name,
            "-n",
            NS,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ])
        .await?;
    Ok(())
}

/// The status a reconcile wrote after RecoverSolo: growing back from member 0.
fn growing() -> serde_json::Value {
    serde_json::json!({
        "initialized": {"clusterId": "c0ffee", "clusterToken": "uid"},
        "members": [
            {"id": 1, "name": "m-0", "role": "leader", "caughtUp": true},
        ],
        "recovery": {
            "generation": 1, "phase": "Growing", "member": 0, "fromEpoch": 0, "reset": [1, 2],
            "reason": "Growing", "message": "recovered alone", "since": "2026-12-07T00:00:00Z"
        }
    })
}

/// A RaftCluster of three whose status says it grows back after RecoverSolo.
async fn create_growing(plane: &ControlPlane, name: &str) -> Result<()> {
    plane
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&cluster(name)), T)
        .await?
        .ok()?;
    write_status(plane, name, growing()).await
}

/// The write that landed after it: the recovery completed.
fn completed() -> serde_json::Value {
    serde_json::json!({
        "recovery": {"phase": "Completed", "reason": "Completed", "message": "back to spec.replicas members"}
    })
}

async fn recovery_phase(plane: &ControlPlane, name: &str) -> Result<String> {
    plane
        .kubectl_stdout(&[
            "get",
            "rkc",
            name,
            "-n",
            NS,
            "-o",
            "jsonpath={.status.recovery.phase}",
        ])
        .await
}

async fn client(plane: &ControlPlane) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(plane.kubeconfig())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn context<M: MemberApi>(client: kube::Client, members: M) -> Arc<Context<M>> {
    Arc::new(Context {
        client,
        members,
        reporter: kube::runtime::events::Reporter {
            controller: "raftkv-operator".to_string(),
            instance: Some("k8s-reconcile-test".to_string()),
        },
        metrics: Arc::new(Metrics::default()),
    })
}

/// Real members (none answer here), with one more thing done while the
/// reconcile observes them: another writer completes the recovery, between
/// the reconcile's read of the RaftCluster and its status write.
struct CompletedWhileObserving {
    api: kube::Api<RaftCluster>,
    name: String,
}

impl MemberApi for CompletedWhileObserving {
    async fn observe(
        &self,
        members: &MemberEndpoints,
        token: &str,
        ordinals: Range<u32>,
    ) -> MemberObservation {
        let patch = kube::api::Patch::Merge(serde_json::json!({ "status": completed() }));
        let params = kube::api::PatchParams::default();
        if let Err(e) = self.api.patch_status(&self.name, &params, &patch).await {
            panic!("the concurrent status write failed: {e}");
        }
        LiveMembers.observe(members, token, ordinals).await
    }

    async fn execute(
        &self,
        members: &MemberEndpoints,
        token: &str,
        step: &Step,
        observed: &Observed,
    ) -> Result<Outcome, ExecError> {
        LiveMembers.execute(members, token, step, observed).await
    }

    async fn take_backup(
        &self,
        members: &MemberEndpoints,
        take: &TakeBackup,
        retain: u32,
        ordinals: Vec<u32>,
    ) -> Result<BackupDone, ExecError> {
        LiveMembers
            .take_backup(members, take, retain, ordinals)
            .await
    }

    async fn move_leader(
        &self,
        members: &MemberEndpoints,
        from: u32,
        to: u64,
    ) -> Result<(), ExecError> {
        LiveMembers.move_leader(members, from, to).await
    }

    async fn compact(
        &self,
        members: &MemberEndpoints,
        leader: u32,
        retain: u64,
    ) -> Result<i64, ExecError> {
        LiveMembers.compact(members, leader, retain).await
    }

    async fn defragment(&self, members: &MemberEndpoints, ordinal: u32) -> Result<(), ExecError> {
        LiveMembers.defragment(members, ordinal).await
    }

    async fn recover_solo(
        &self,
        members: &MemberEndpoints,
        ordinal: u32,
        min_leaderless: Duration,
    ) -> Result<SoloRecovered, ExecError> {
        LiveMembers
            .recover_solo(members, ordinal, min_leaderless)
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_never_plans_from_or_writes_over_a_newer_status() -> Result<()> {
    let plane = ControlPlane::up(ControlPlaneOptions {
        store: Store::from_env()?,
        node: false,
        ..ControlPlaneOptions::default()
    })?;
    let crd = raftkv_tests::repo_root()
        .join("crds/raftcluster.yaml")
        .display()
        .to_string();
    plane.kubectl_stdout(&["apply", "-f", &crd]).await?;
    plane.wait_established("raftclusters.raftkv.io").await?;
    plane.kubectl_stdout(&["create", "namespace", NS]).await?;
    let client = client(&plane).await?;
    let api: kube::Api<RaftCluster> = kube::Api::namespaced(client.clone(), NS);

    // 1. The watch cache lags: the reconcile is handed the RaftCluster as it
    // was before the recovery completed. It must plan from the API server's
    // current status, and leave Completed in place.
    let name = "stale";
    create_growing(&plane, name).await?;
    let stale = api.get(name).await?;
    write_status(&plane, name, completed()).await?;
    let result = reconcile(Arc::new(stale), context(client.clone(), LiveMembers)).await;
    let phase = recovery_phase(&plane, name).await?;
    ensure!(
        phase == "Completed",
        "a reconcile handed a stale RaftCluster set the recovery back to {phase:?} \
         (its result: {result:?})"
    );

    // 2. The recovery completes while the reconcile runs: its status write,
    // computed from what it read before, is refused (409), not merged over.
    let name = "raced";
    create_growing(&plane, name).await?;
    let current = api.get(name).await?;
    let members = CompletedWhileObserving {
        api: api.clone(),
        name: name.to_string(),
    };
    let result = reconcile(Arc::new(current), context(client.clone(), members)).await;
    let phase = recovery_phase(&plane, name).await?;
    ensure!(
        phase == "Completed",
        "a reconcile wrote its status over a newer one: the recovery is back to {phase:?} \
         (its result: {result:?})"
    );
    match result {
        Err(e) if e.is_conflict() => {}
        other => bail!("the reconcile should have been refused with a conflict: {other:?}"),
    }
    // A lost race is retried, not reported as a failure.
    let failed = plane
        .kubectl_stdout(&[
            "get",
            "rkc",
            name,
            "-n",
            NS,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"ReconcileFailed\")].status}",
        ])
        .await
        .context("reading conditions")?;
    ensure!(
        failed != "True",
        "a lost race was reported as ReconcileFailed"
    );
    Ok(())
}
