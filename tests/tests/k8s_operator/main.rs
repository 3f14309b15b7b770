//! The user's journey on a real control plane: `helm install` the chart,
//! `kubectl apply` a RaftCluster, `kubectl scale rkc` it while a client writes
//! (killing the leading operator replica mid-scale),
//! take members, pods and the StatefulSet away, grow its volumes, roll out a
//! new image with a member down, recover from a lost quorum, take RBAC away,
//! `kubectl delete` it, back up one cluster into a new one, and run one with
//! TLS whose certificates rotate under a writer and which is compacted and
//! defragmented on schedules.
//!
//! The API server, controller-manager and scheduler are real (see
//! tests/k8s/README.md) and store on raftkv; the members and the operator run
//! as pods of the kubelet stand-in, each in its own network namespace, and the
//! operator runs with the chart's ServiceAccount and RBAC, nothing more. The
//! test reaches members at their pod addresses over the pods' bridge, with the
//! real `etcdctl`, as a user with `kubectl port-forward` would.
//!
//! One test, one control plane: the phases run in order on it (two control
//! planes cannot share the API server's port and the pods' bridge).

mod backup;
mod ha;
mod maintenance;
mod recovery;
mod rollout;
mod storage;
mod tls;
mod user;

use anyhow::{bail, ensure, Context, Result};
use raftkv_tests::binaries::helm_bin;
use raftkv_tests::command::run;
use raftkv_tests::control_plane::{ControlPlane, ControlPlaneOptions, Store};
use raftkv_tests::wait::until;
use raftkv_tests::Etcdctl;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use user::{
    container_pid, ensure_none_lost, events, jsonpath, keys, kubectl, member_endpoints, owned,
    wait_pod_recreated, wait_settled, Writer, NS,
};

const OPERATOR_NS: &str = "raftkv-system";
const RC: &str = "demo";
const T: Duration = Duration::from_secs(60);

/// Scales to `replicas` and waits until the cluster settled there, keeping
/// the writer's endpoints current.
async fn scale(
    plane: &ControlPlane,
    replicas: usize,
    endpoints: &Mutex<Vec<String>>,
) -> Result<()> {
    kubectl(
        plane,
        &[
            "scale",
            "-n",
            NS,
            &format!("rkc/{RC}"),
            &format!("--replicas={replicas}"),
        ],
    )
    .await?;
    wait_settled(plane, RC, replicas, Duration::from_secs(600)).await?;
    *endpoints.lock().unwrap() = member_endpoints(plane, RC).await?;
    // `etcdctl member list` equals the spec.
    let etcdctl = Etcdctl::new(&endpoints.lock().unwrap().clone())?;
    let members = etcdctl.run(&["member", "list"]).await?.ok()?.stdout;
    ensure!(
        members.lines().count() == replicas,
        "at {replicas} replicas, member list is:\n{members}"
    );
    // Removed members' volumes are gone: one PVC per member.
    let claims = owned(plane, RC, "pvc").await?;
    ensure!(
        claims.len() == replicas,
        "at {replicas} replicas, the PVCs are: {claims:?}"
    );
    disruptions_keep_a_quorum(plane, replicas).await
}

/// The PodDisruptionBudget lets voluntary disruptions (drains) take only
/// members beyond a quorum: none at 1 or 2 members, one at 3, two at 5, as
/// the real disruption controller counts them.
async fn disruptions_keep_a_quorum(plane: &ControlPlane, replicas: usize) -> Result<()> {
    let allowed = (replicas - (replicas / 2 + 1)).to_string();
    until(
        Duration::from_secs(60),
        format!("the disruption budget to allow {allowed} at {replicas} members"),
        || async {
            let now = jsonpath(plane, &format!("pdb/{RC}"), "{.status.disruptionsAllowed}").await?;
            if now == allowed {
                Ok(Some(()))
            } else {
                bail!("disruptionsAllowed is {now:?}")
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_apply_scale_delete() -> Result<()> {
    let helm = helm_bin()?;
    let plane = ControlPlane::up(ControlPlaneOptions {
        store: Store::from_env()?,
        ..ControlPlaneOptions::default()
    })?;

    // 1. helm install: the CRD is accepted, the operator pod becomes Ready.
    let kubeconfig = plane.kubeconfig().display().to_string();
    let chart = raftkv_tests::repo_root()
        .join("charts/raftkv-operator")
        .display()
        .to_string();
    run(
        &helm,
        &[
            "install",
            "raftkv-operator",
            &chart,
            "--namespace",
            OPERATOR_NS,
            "--create-namespace",
            "--kubeconfig",
            &kubeconfig,
            "--wait",
            "--timeout",
            "3m",
        ]
        .map(String::from),
        &[],
        &["HELM_", "KUBECONFIG"],
        None,
        Duration::from_secs(240),
    )
    .await?
    .ok()
    .context("helm install")?;
    let established = kubectl(
        &plane,
        &[
            "get",
            "crd",
            "raftclusters.raftkv.io",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
        ],
    )
    .await?;
    ensure!(
        established == "True",
        "the RaftCluster CRD is not Established: {established:?}"
    );
    kubectl(
        &plane,
        &[
            "-n",
            OPERATOR_NS,
            "rollout",
            "status",
            "deployment/raftkv-operator",
            "--timeout=120s",
        ],
    )
    .await?;

    // 2. kubectl apply the example: 3/3 ready with a leader; etcdctl through
    // the members' addresses writes and reads.
    kubectl(&plane, &["create", "namespace", NS]).await?;
    let example = raftkv_tests::repo_root()
        .join("charts/examples/raftcluster.yaml")
        .display()
        .to_string();
    kubectl(&plane, &["apply", "-n", NS, "-f", &example]).await?;
    wait_settled(&plane, RC, 3, Duration::from_secs(300)).await?;
    let endpoints = Arc::new(Mutex::new(member_endpoints(&plane, RC).await?));
    let etcdctl = Etcdctl::new(&endpoints.lock().unwrap().clone())?;
    etcdctl.run(&["put", "hello", "kubernetes"]).await?.ok()?;
    let got = etcdctl
        .run(&["get", "hello", "--print-value-only"])
        .await?
        .ok()?
        .stdout;
    ensure!(
        got.trim() == "kubernetes",
        "etcdctl get hello printed {got:?}"
    );
    let printed = kubectl(&plane, &["get", "rkc", "-n", NS]).await?;
    ensure!(printed.contains(RC), "kubectl get rc printed:\n{printed}");
    // Member metrics: the headless Service names each member's metrics port
    // (what the chart's members ServiceMonitor scrapes), and it serves.
    let port = jsonpath(
        &plane,
        &format!("svc/{RC}-peer"),
        "{.spec.ports[?(@.name==\"metrics\")].port}",
    )
    .await?;
    ensure!(
        port == "2381",
        "the peer Service's metrics port is {port:?}"
    );
    let ip = endpoints.lock().unwrap()[0].replace(":2379", "");
    let scraped = raftkv_tests::http::get(&format!("{ip}:{port}"), "/metrics").await?;
    ensure!(
        scraped.status == 200 && scraped.body.contains("raftkv_"),
        "member metrics at {ip}:{port}: {} {}",
        scraped.status,
        scraped.body.chars().take(200).collect::<String>()
    );

    // 3. scale 5, 3, 1, 3 while a client writes (on through step 4): every
    // acknowledged write is readable at the end; events tell the story. The
    // operator runs as two replicas (the chart's default): the one leading
    // is killed in the middle of the scale to 5, and the standby finishes it.
    let writer = Writer::start(endpoints.clone());
    ha::kill_the_leading_operator_mid_scale(&plane, RC, OPERATOR_NS, 5)
        .await
        .context("killing the leading operator mid-scale")?;
    for replicas in [5, 3, 1, 3] {
        scale(&plane, replicas, &endpoints)
            .await
            .with_context(|| format!("scaling to {replicas}"))?;
    }

    // 4. Delete the leader's pod, then kill a member's process: the cluster
    // keeps serving (the writer keeps going) and the member comes back.
    let leader = jsonpath(&plane, &format!("rkc/{RC}"), "{.status.leader}").await?;
    ensure!(
        !leader.is_empty(),
        "no leader reported before deleting its pod"
    );
    let old_uid = jsonpath(&plane, &format!("pod/{leader}"), "{.metadata.uid}").await?;
    kubectl(&plane, &["delete", "pod", "-n", NS, &leader, "--wait=true"]).await?;
    wait_pod_recreated(&plane, &leader, &old_uid).await?;
    wait_settled(&plane, RC, 3, Duration::from_secs(300))
        .await
        .context("after deleting the leader's pod")?;
    *endpoints.lock().unwrap() = member_endpoints(&plane, RC).await?;
    let victim = format!("{RC}-1");
    let pid = container_pid(&plane, NS, &victim).await?;
    // SAFETY: kill(2) on the pid of a member process this test's node runs.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    until(
        Duration::from_secs(120),
        format!("pod {victim} restarted its member"),
        || async {
            let restarts = jsonpath(
                &plane,
                &format!("pod/{victim}"),
                "{.status.containerStatuses[0].restartCount}",
            )
            .await?;
            Ok((restarts.parse::<u32>().unwrap_or(0) >= 1).then_some(()))
        },
    )
    .await?;
    wait_settled(&plane, RC, 3, Duration::from_secs(300))
        .await
        .context("after killing a member process")?;
    *endpoints.lock().unwrap() = member_endpoints(&plane, RC).await?;

    // 4b. Delete the StatefulSet: its pods go with it, their volumes stay
    // (whenDeleted: Retain). The operator re-creates it at the three members
    // its status records, and they come back with their data (issue 18,
    // item 2: it used to come back with 0 pods and stay there).
    let old_sts = jsonpath(&plane, &format!("sts/{RC}"), "{.metadata.uid}").await?;
    let old_pod = jsonpath(&plane, &format!("pod/{RC}-0"), "{.metadata.uid}").await?;
    kubectl(&plane, &["delete", "sts", "-n", NS, RC, "--wait=true"]).await?;
    until(
        Duration::from_secs(120),
        "the StatefulSet re-created with 3 replicas",
        || async {
            let now = jsonpath(
                &plane,
                &format!("sts/{RC}"),
                "{.metadata.uid}/{.spec.replicas}",
            )
            .await?;
            match now.split_once('/') {
                Some((uid, "3")) if !uid.is_empty() && uid != old_sts => Ok(Some(())),
                _ => bail!("StatefulSet uid/replicas = {now:?}"),
            }
        },
    )
    .await?;
    wait_pod_recreated(&plane, &format!("{RC}-0"), &old_pod).await?;
    wait_settled(&plane, RC, 3, Duration::from_secs(300))
        .await
        .context("after deleting the StatefulSet")?;
    *endpoints.lock().unwrap() = member_endpoints(&plane, RC).await?;

    // 4c. Scale the StatefulSet to 1 from outside, taking the quorum away:
    // the operator owns the count and gives both pods back, with the very
    // volumes they had (whenScaled: Retain; issue 18, item 4: with Delete,
    // Kubernetes deleted two voters' data).
    let claim_uid = |ordinal: u32| {
        let plane = &plane;
        async move {
            jsonpath(
                plane,
                &format!("pvc/data-{RC}-{ordinal}"),
                "{.metadata.uid}",
            )
            .await
        }
    };
    let claims_before = [claim_uid(1).await?, claim_uid(2).await?];
    let old_pod = jsonpath(&plane, &format!("pod/{RC}-2"), "{.metadata.uid}").await?;
    kubectl(&plane, &["scale", "sts", "-n", NS, RC, "--replicas=1"]).await?;
    // Deleted by the StatefulSet controller, then back under a new uid.
    wait_pod_recreated(&plane, &format!("{RC}-2"), &old_pod).await?;
    wait_settled(&plane, RC, 3, Duration::from_secs(300))
        .await
        .context("after an outside scale of the StatefulSet to 1")?;
    let claims_after = [claim_uid(1).await?, claim_uid(2).await?];
    ensure!(
        claims_after == claims_before,
        "members 2 and 3 came back on other volumes: {claims_before:?} -> {claims_after:?}"
    );
    *endpoints.lock().unwrap() = member_endpoints(&plane, RC).await?;

    // 4d. Grow every member's volume under the writer, in place (issue 18,
    // item 3: the StatefulSet's claim template is immutable, and applying
    // the new size failed every reconcile from then on).
    storage::grow_volumes_then_refuse_what_cannot_be_done(&plane, RC, 3, "3Gi")
        .await
        .context("growing the volumes")?;

    // 4e. Roll out a new image while one member is down (issue 18, item 1):
    // the down member first, never fewer than a majority of pods serving,
    // the leader last after handing over.
    rollout::roll_out_a_new_image_with_a_member_down(&plane, RC, 3)
        .await
        .context("rolling out a new image")?;
    *endpoints.lock().unwrap() = member_endpoints(&plane, RC).await?;

    let acked = writer.finish().await;
    ensure!(
        !acked.is_empty(),
        "the writer got no write acknowledged while scaling"
    );
    let endpoints = endpoints.lock().unwrap().clone();
    ensure_none_lost(&acked, &keys(&endpoints, "w-").await?)?;
    let story = events(&plane, RC).await?;
    for reason in [
        "ScalingUp",
        "AddingLearner",
        "PromotingLearner",
        "RemovingMember",
        "ScalingDown",
    ] {
        ensure!(
            story.contains(reason),
            "no {reason} event on rkc/{RC}:\n{story}"
        );
    }

    // 5. Solo recovery: lose two of three members with their volumes, ask
    // for it in the spec, get every acknowledged write back on three members.
    // Then asked for on the minority side of a partition (the operator and
    // member 0 cut off from members 1 and 2, which keep a quorum): nobody is
    // reset. (In this order on purpose: with the partition first, member 0
    // sometimes led after the heal and then, its followers wiped, kept
    // reporting a live leader, so the real recovery waited forever; a node
    // defect recorded in issue 18's note, not fixed yet.)
    recovery::lose_two_of_three_and_recover(&plane, RC, &acked).await?;
    recovery::a_partitioned_operator_resets_nobody(&plane, RC, OPERATOR_NS)
        .await
        .context("solo recovery asked for on the minority side of a partition")?;

    // 6. RBAC is real: take `patch` on StatefulSets away from the chart's
    // ClusterRole and the operator's status says what it could not do; give it
    // back and the condition clears.
    let role = kubectl(
        &plane,
        &["get", "clusterrole", "raftkv-operator", "-o", "json"],
    )
    .await?;
    let mut narrowed: serde_json::Value = serde_json::from_str(&role)?;
    for rule in narrowed["rules"]
        .as_array_mut()
        .context("ClusterRole rules")?
    {
        if rule["resources"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x == "statefulsets"))
        {
            rule["verbs"]
                .as_array_mut()
                .context("rule verbs")?
                .retain(|v| v != "patch");
        }
    }
    plane
        .kubectl_with_stdin(&["replace", "-f", "-"], Some(&narrowed.to_string()), T)
        .await?
        .ok()?;
    let failed = "{.status.conditions[?(@.type==\"ReconcileFailed\")].message}";
    let message = until(
        Duration::from_secs(120),
        "a ReconcileFailed condition",
        || async {
            let message = jsonpath(&plane, &format!("rkc/{RC}"), failed).await?;
            Ok((!message.is_empty()).then_some(message))
        },
    )
    .await?;
    ensure!(
        message.contains("forbidden") && message.contains("statefulsets"),
        "the ReconcileFailed condition does not name the refused call: {message}"
    );
    let story = events(&plane, RC).await?;
    ensure!(
        story.contains("ReconcileFailed"),
        "no ReconcileFailed event on rkc/{RC}:\n{story}"
    );
    let mut restored: serde_json::Value = serde_json::from_str(&role)?;
    restored["metadata"]
        .as_object_mut()
        .context("ClusterRole metadata")?
        .remove("resourceVersion");
    plane
        .kubectl_with_stdin(&["replace", "-f", "-"], Some(&restored.to_string()), T)
        .await?
        .ok()?;
    until(
        Duration::from_secs(120),
        "the ReconcileFailed condition to clear",
        || async {
            let message = jsonpath(&plane, &format!("rkc/{RC}"), failed).await?;
            Ok(message.is_empty().then_some(()))
        },
    )
    .await?;

    // 7. kubectl delete rkc: the real garbage collector removes what it owned.
    kubectl(&plane, &["delete", "rkc", "-n", NS, RC, "--wait=true"]).await?;
    until(
        Duration::from_secs(120),
        "owned objects garbage-collected",
        || async {
            let left = owned(
                &plane,
                RC,
                "statefulsets,services,poddisruptionbudgets,pods",
            )
            .await?;
            if left.is_empty() {
                Ok(Some(()))
            } else {
                bail!("still there: {left:?}")
            }
        },
    )
    .await?;
    // The documented policy: deleting a RaftCluster keeps its volumes.
    let kept = owned(&plane, RC, "pvc").await?;
    ensure!(kept.len() == 3, "after delete the PVCs are: {kept:?}");

    // 8. A scheduled backup every minute, restored into a new RaftCluster.
    backup::scheduled_backup_and_restore(&plane).await?;

    // 9. A cluster with TLS on both ports, certificates from the operator,
    // rotated under a writer (issue 18, "Done means" 3); then compaction and
    // defragmentation on schedules, over TLS.
    tls::a_tls_cluster_rotates_its_certificates_under_a_writer(&plane).await?;
    Ok(())
}
