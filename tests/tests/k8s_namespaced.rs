//! A namespace-scoped install on a real control plane: the chart rendered
//! with `watchNamespace`, applied, and the operator's controller run in this
//! process as the chart's ServiceAccount (its token, its rules, nothing
//! more). It runs the RaftClusters of its namespace and no other, and the
//! install grants it nothing cluster-wide.
//!
//! No node runs (`--no-node`): the controller's first steps (finalizer,
//! owned objects) are what show which namespaces it may and does act in.

use anyhow::{bail, ensure, Context as _, Result};
use raftkv_operator::crd::RaftCluster;
use raftkv_operator::metrics::Metrics;
use raftkv_tests::binaries::helm_bin;
use raftkv_tests::command::run;
use raftkv_tests::control_plane::{ControlPlane, ControlPlaneOptions, Store};
use raftkv_tests::wait::until;
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const OPERATOR_NS: &str = "raftkv-system";
const WATCHED: &str = "team-a";
const OTHER: &str = "team-b";

fn cluster(name: &str, ns: &str) -> String {
    format!(
        "apiVersion: raftkv.io/v1alpha1
kind: RaftCluster
metadata: {{name: {name}, namespace: {ns}}}
spec: {{replicas: 3, image: raftkv:0.1.0}}
"
    )
}

/// A client that authenticates as the chart's ServiceAccount, with a token
/// the API server issues for it (`kubectl create token`).
async fn service_account_client(plane: &ControlPlane) -> Result<kube::Client> {
    let token = plane
        .kubectl_stdout(&["create", "token", "raftkv-operator", "-n", OPERATOR_NS])
        .await?;
    let admin = kube::config::Kubeconfig::read_from(plane.kubeconfig())?;
    let mut as_json = serde_json::to_value(&admin)?;
    for user in as_json["users"]
        .as_array_mut()
        .context("kubeconfig users")?
    {
        user["user"] = serde_json::json!({ "token": token.trim() });
    }
    let kubeconfig: kube::config::Kubeconfig = serde_json::from_value(as_json)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_scoped_operator_runs_its_namespace_only() -> Result<()> {
    let helm = helm_bin()?;
    let plane = ControlPlane::up(ControlPlaneOptions {
        store: Store::from_env()?,
        node: false,
        ..ControlPlaneOptions::default()
    })?;
    for ns in [OPERATOR_NS, WATCHED, OTHER] {
        plane.kubectl_stdout(&["create", "namespace", ns]).await?;
    }
    // The chart as `helm install --set watchNamespace=team-a` renders it
    // (its Deployment stays Pending: no node; this process runs the controller).
    let chart = raftkv_tests::repo_root()
        .join("charts/raftkv-operator")
        .display()
        .to_string();
    let rendered = run(
        &helm,
        &[
            "template",
            "raftkv-operator",
            &chart,
            "--namespace",
            OPERATOR_NS,
            "--include-crds",
            "--set",
            &format!("watchNamespace={WATCHED}"),
        ]
        .map(String::from),
        &[],
        &["HELM_", "KUBECONFIG"],
        None,
        T,
    )
    .await?
    .ok()
    .context("helm template")?
    .stdout;
    ensure!(
        !rendered.contains("kind: ClusterRole"),
        "a namespace-scoped install renders cluster-wide RBAC:\n{rendered}"
    );
    plane
        .kubectl_with_stdin(&["apply", "-f", "-"], Some(&rendered), T)
        .await?
        .ok()?;
    plane.wait_established("raftclusters.raftkv.io").await?;
    for (name, ns) in [("a", WATCHED), ("b", OTHER)] {
        plane
            .kubectl_with_stdin(&["apply", "-f", "-"], Some(&cluster(name, ns)), T)
            .await?
            .ok()?;
    }

    let client = service_account_client(&plane).await?;
    // Nothing cluster-wide: listing RaftClusters across namespaces is refused.
    match kube::Api::<RaftCluster>::all(client.clone())
        .list(&Default::default())
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => bail!("the ServiceAccount listed RaftClusters cluster-wide: {other:?}"),
    }
    let controller = tokio::spawn(raftkv_operator::controller::run(
        client,
        Arc::new(Metrics::default()),
        Some(WATCHED.to_string()),
    ));

    // Its namespace's cluster gets the finalizer and its owned objects.
    until(
        Duration::from_secs(60),
        format!("the StatefulSet of rkc/a in {WATCHED}"),
        || async {
            let sts = plane
                .kubectl(&["get", "sts", "a", "-n", WATCHED, "-o", "name"], T)
                .await?;
            Ok(sts.ok().is_ok().then_some(()))
        },
    )
    .await?;
    let finalizers = plane
        .kubectl_stdout(&[
            "get",
            "rkc",
            "a",
            "-n",
            WATCHED,
            "-o",
            "jsonpath={.metadata.finalizers}",
        ])
        .await?;
    ensure!(
        finalizers.contains("raftkv.io/cleanup"),
        "rkc/a has finalizers {finalizers:?}"
    );
    // The other namespace's is left alone (given the same time again).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let untouched = plane
        .kubectl_stdout(&[
            "get",
            "rkc",
            "b",
            "-n",
            OTHER,
            "-o",
            "jsonpath={.metadata.finalizers}{.status}",
        ])
        .await?;
    ensure!(
        untouched.is_empty(),
        "rkc/b in {OTHER} was acted on: {untouched:?}"
    );
    let owned = plane
        .kubectl_stdout(&["get", "sts,svc", "-n", OTHER, "-o", "name"])
        .await?;
    ensure!(owned.trim().is_empty(), "objects made in {OTHER}: {owned}");
    controller.abort();
    Ok(())
}
