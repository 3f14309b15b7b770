//! kube-apiserver stored on raftkv: everything the API server asks of etcd.
//!
//! A real kube-apiserver (built from Kubernetes' Go modules, see
//! tests/k8s/build-control-plane) runs on a 3-member raftkv cluster, and a
//! user's `kubectl` drives it: 5,000 ConfigMaps created and listed in pages
//! (ranges with limit and continue), a watch from an old resourceVersion that
//! must see every change across a raftkv leader change (watches resumed from a
//! revision on another member), the API server's own periodic compaction (a
//! transaction on `compact_rev_key`'s version, then Compact), and
//! `kubectl get --watch` streaming through all of it. Leases (TTLs) are
//! exercised by the API server itself: its endpoint reconciler keeps a lease
//! per API server, and Events carry a TTL.
//!
//! `RAFTKV_K8S_STORE=etcd` runs the same test with etcd underneath, to compare.

use anyhow::{bail, ensure, Context, Result};
use raftkv_tests::control_plane::{ControlPlane, ControlPlaneOptions, Store};
use raftkv_tests::wait::until;
use raftkv_tests::Etcdctl;
use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const NAMESPACE: &str = "store-e2e";
const CONFIGMAPS: usize = 5000;
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);
/// `kubectl get` of the test's ConfigMaps.
const GET_OURS: [&str; 6] = ["get", "configmaps", "-n", NAMESPACE, "-l", "e2e=store"];

fn configmaps(from: usize, to: usize) -> String {
    let mut yaml = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for i in from..to {
        yaml.push_str(&format!(
            "- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: cm-{i:05}\n    \
             namespace: {NAMESPACE}\n    labels: {{e2e: store}}\n  data: {{index: \"{i}\"}}\n"
        ));
    }
    yaml
}

/// A kubectl process of the control plane whose output the test reads.
fn spawn_kubectl(plane: &ControlPlane, args: &[&str]) -> Result<Child> {
    Command::new(plane.kubectl_path())
        .args(["--kubeconfig", &plane.kubeconfig().display().to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting kubectl {}", args.join(" ")))
}

/// A watch of our ConfigMaps from `resource_version`, through the API
/// (`kubectl get --raw '...?watch=1&resourceVersion=RV'`, which is what
/// informers do): one JSON event per line.
fn raw_watch(plane: &ControlPlane, resource_version: &str) -> Result<Child> {
    let path = format!(
        "/api/v1/namespaces/{NAMESPACE}/configmaps?watch=1&labelSelector=e2e%3Dstore\
         &resourceVersion={resource_version}"
    );
    spawn_kubectl(plane, &["get", "--raw", &path])
}

/// `(type, name)` of one line of the raw watch.
fn event(line: &str) -> Result<(String, String)> {
    let v: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("watch event {line:?}"))?;
    Ok((
        v["type"].as_str().unwrap_or_default().to_string(),
        v["object"]["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ))
}

/// What a user types to follow the ConfigMaps: `kubectl get configmaps
/// --watch`, with the event type as the first column.
fn kubectl_watch(plane: &ControlPlane) -> Result<Child> {
    spawn_kubectl(
        plane,
        &[&GET_OURS[..], &["--watch", "--output-watch-events"]].concat(),
    )
}

/// `(type, name)` of one row `kubectl get --watch --output-watch-events`
/// prints; `None` for its header row.
fn row(line: &str) -> Option<(String, String)> {
    let mut columns = line.split_whitespace();
    let kind = columns.next()?;
    let name = columns.next()?;
    (kind != "EVENT").then(|| (kind.to_string(), name.to_string()))
}

/// The next event `lines` print, waiting up to a minute.
async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    what: &str,
) -> Result<String> {
    tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .with_context(|| format!("{what} stalled"))??
        .with_context(|| format!("{what} ended"))
}

/// Creates (or leaves be) ConfigMaps `from..to` with server-side apply, which
/// is idempotent: a request that failed while the store changed leader is
/// simply sent again, as a user would.
async fn apply_configmaps(plane: &ControlPlane, from: usize, to: usize) -> Result<()> {
    let yaml = configmaps(from, to);
    let mut last = None;
    for _ in 0..3 {
        let out = plane
            .kubectl_with_stdin(
                &["apply", "--server-side", "-f", "-", "-o", "name"],
                Some(&yaml),
                Duration::from_secs(600),
            )
            .await?;
        if out.success() {
            return Ok(());
        }
        last = Some(out);
    }
    bail!("kubectl apply kept failing: {}", last.expect("three tries"))
}

/// The store member (1-based) that leads, asking every member but `skip`
/// (a frozen one would only time out); None while none does.
async fn store_leader(plane: &ControlPlane, skip: Option<usize>) -> Result<Option<usize>> {
    for (i, endpoint) in plane.store_endpoints().iter().enumerate() {
        if Some(i + 1) == skip {
            continue;
        }
        let out = Etcdctl::new(std::slice::from_ref(endpoint))?
            .run(&["endpoint", "status", "-w", "json"])
            .await?;
        if !out.success() {
            continue;
        }
        let statuses: serde_json::Value = serde_json::from_str(&out.stdout)?;
        let status = &statuses[0]["Status"];
        let member = status["header"]["member_id"].as_u64();
        if member.is_some() && member == status["leader"].as_u64() {
            return Ok(Some(i + 1));
        }
    }
    Ok(None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_apiserver_on_the_store() -> Result<()> {
    let store = Store::from_env()?;
    let plane = ControlPlane::up(ControlPlaneOptions {
        store,
        node: false,
        compaction_interval: Some("30s".to_string()),
        ..ControlPlaneOptions::default()
    })?;
    let kubectl = |args: &'static [&'static str]| plane.kubectl(args, KUBECTL_TIMEOUT);

    kubectl(&["create", "namespace", NAMESPACE]).await?.ok()?;
    // Where the watch starts: before any ConfigMap of ours exists.
    let start_rv = plane
        .kubectl(
            &[
                "get",
                "namespace",
                NAMESPACE,
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ],
            KUBECTL_TIMEOUT,
        )
        .await?
        .ok()?
        .stdout;
    let mut watcher = raw_watch(&plane, start_rv.trim())?;
    let mut watched = BufReader::new(watcher.stdout.take().context("watch stdout")?).lines();
    let mut follower = kubectl_watch(&plane)?;
    let mut followed = BufReader::new(
        follower
            .stdout
            .take()
            .context("kubectl get --watch stdout")?,
    )
    .lines();

    // 5,000 objects, the first half before a leader change of the store, the
    // second half after it.
    let half = CONFIGMAPS / 2;
    apply_configmaps(&plane, 0, half).await?;
    let leader = until(Duration::from_secs(30), "a store leader", || {
        store_leader(&plane, None)
    })
    .await?;
    let component = match store {
        Store::Raftkv => format!("raftkv-{leader}"),
        Store::Etcd => format!("etcd-{leader}"),
    };
    let pid = plane.pid(&component)?;
    // Freezing the leader (SIGSTOP) for longer than the election timeout makes
    // the others elect a new one; thawed, it rejoins as a follower. Requests and
    // watches the API server has on it stall rather than fail: the hard case.
    // SAFETY: kill(2) with a pid this test's control plane started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let new_leader = until(Duration::from_secs(30), "a new store leader", || {
        store_leader(&plane, Some(leader))
    })
    .await;
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let new_leader = new_leader?;
    ensure!(new_leader != leader, "leadership stayed on member {leader}");
    apply_configmaps(&plane, half, CONFIGMAPS).await?;

    // Every ConfigMap, listed in pages of 500 (limit + continue).
    let listed = plane
        .kubectl(
            &[&GET_OURS[..], &["--chunk-size=500", "-o", "name"]].concat(),
            KUBECTL_TIMEOUT,
        )
        .await?
        .ok()?;
    let names: BTreeSet<&str> = listed.stdout.lines().collect();
    ensure!(
        names.len() == CONFIGMAPS,
        "listed {} ConfigMaps, created {CONFIGMAPS}",
        names.len()
    );

    // The watch saw every creation, in order, across the leader change.
    let mut seen = Vec::new();
    while seen.len() < CONFIGMAPS {
        let what = format!("the watch, after {} events,", seen.len());
        seen.push(next_line(&mut watched, &what).await?);
    }
    for (i, line) in seen.iter().enumerate() {
        let (kind, name) = event(line)?;
        let want = format!("cm-{i:05}");
        ensure!(
            kind == "ADDED" && name == want,
            "watch event {i} is {kind} {name}, wanted ADDED {want}"
        );
    }
    // So did `kubectl get --watch`, started before the first one.
    let mut added = BTreeSet::new();
    while added.len() < CONFIGMAPS {
        let what = format!("kubectl get --watch, after {} ADDED rows,", added.len());
        if let Some((kind, name)) = row(&next_line(&mut followed, &what).await?) {
            ensure!(kind == "ADDED", "kubectl get --watch printed {kind} {name}");
            added.insert(name);
        }
    }

    // The API server compacts its store every 30 s (a transaction on the
    // version of `compact_rev_key`, then Compact) up to the revision it saw
    // one interval earlier, so the first compaction may still keep the
    // watch's starting revision. Wait for one that removed it, then check
    // that the watch still streams.
    let etcdctl = Etcdctl::new(plane.store_endpoints())?;
    let start_rev = format!("--rev={}", start_rv.trim());
    until(
        Duration::from_secs(180),
        "the API server to compact the store past the watch's start",
        || async {
            let old = etcdctl
                .run(&["get", "/registry/namespaces/default", &start_rev])
                .await?;
            Ok((!old.success() && old.stderr.contains("compacted")).then_some(()))
        },
    )
    .await?;
    kubectl(&["delete", "configmap", "cm-00000", "-n", NAMESPACE])
        .await?
        .ok()?;
    let line = next_line(&mut watched, "the watch, after the compaction,").await?;
    let (kind, name) = event(&line)?;
    ensure!(
        kind == "DELETED" && name == "cm-00000",
        "after the compaction the watch printed {kind} {name}"
    );
    let line = next_line(&mut followed, "kubectl get --watch, after the compaction,").await?;
    ensure!(
        row(&line) == Some(("DELETED".to_string(), "cm-00000".to_string())),
        "after the compaction kubectl get --watch printed {line:?}"
    );
    // A list at a revision the store compacted away is refused as expired
    // (HTTP 410), exactly as on etcd. The API server's watch cache serves
    // exact-revision lists from its own snapshots until its compactor, which
    // polls the store's compaction revision every 15 s, drops the snapshots
    // below it; from then on the list goes to the store, which refuses it.
    let list_at_start = format!(
        "/api/v1/namespaces/{NAMESPACE}/configmaps?resourceVersion={}\
         &resourceVersionMatch=Exact&limit=1",
        start_rv.trim()
    );
    until(
        Duration::from_secs(45),
        "a list at the compacted resourceVersion to be refused as expired",
        || async {
            let gone = plane
                .kubectl(&["get", "--raw", &list_at_start], KUBECTL_TIMEOUT)
                .await?;
            if !gone.success() && gone.stderr.contains("Expired") {
                return Ok(Some(()));
            }
            bail!("not refused as expired: {gone}")
        },
    )
    .await?;

    watcher.kill().await.ok();
    follower.kill().await.ok();
    Ok(())
}
