//! A k8s test that fails still leaves the machine as it found it: no process
//! of the control plane or of a pod, no pod network namespace, no mount, no
//! bridge; only the logs stay, for reading the failure.
//!
//! A failing test returns an error, which drops its [`ControlPlane`] on the
//! way out; that drop is what is tested here, with a pod running (its process,
//! network namespace and volume are what a crashed run would leak).

use anyhow::{bail, ensure, Context, Result};
use raftkv_tests::control_plane::{ControlPlane, ControlPlaneOptions, Store};
use raftkv_tests::wait::until;
use std::path::{Path, PathBuf};
use std::time::Duration;

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: sleeper
  namespace: default
spec:
  containers:
  - name: sleeper
    image: busybox
    command: [/bin/sh, -c, 'echo up > /data/marker; exec sleep 3600']
    volumeMounts:
    - {name: data, mountPath: /data}
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: sleeper-data}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: sleeper-data
  namespace: default
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: standard
  resources: {requests: {storage: 1Mi}}
";

/// What a run holds on the machine while it is up.
#[derive(Debug, Default)]
struct Footprint {
    state: PathBuf,
    pids: Vec<i32>,
    netns: Vec<String>,
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn pod_netns() -> Result<Vec<String>> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("ip netns list")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with("rkpod"))
        .map(String::from)
        .collect())
}

fn mounts_under(dir: &Path) -> Result<Vec<String>> {
    let table = std::fs::read_to_string("/proc/self/mounts").context("/proc/self/mounts")?;
    let prefix = dir.display().to_string();
    Ok(table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|target| target.starts_with(&prefix))
        .map(String::from)
        .collect())
}

/// Brings a control plane up, runs a pod on it, notes what the run holds,
/// then fails the way a test does: by returning an error.
async fn failing_test(seen: &mut Footprint) -> Result<()> {
    let plane = ControlPlane::up(ControlPlaneOptions {
        store: Store::from_env()?,
        ..ControlPlaneOptions::default()
    })?;
    // Refused until the controller-manager made the namespace's default
    // ServiceAccount, a few seconds after the API server came up.
    until(Duration::from_secs(60), "pod sleeper created", || async {
        plane
            .kubectl_with_stdin(&["apply", "-f", "-"], Some(POD), Duration::from_secs(60))
            .await?
            .ok()?;
        Ok(Some(()))
    })
    .await?;
    let container = until(Duration::from_secs(120), "pod sleeper running", || async {
        let id = plane
            .kubectl(
                &[
                    "get",
                    "pod",
                    "sleeper",
                    "-o",
                    "jsonpath={.status.phase}/{.status.containerStatuses[0].containerID}",
                ],
                Duration::from_secs(30),
            )
            .await?
            .ok()?
            .stdout;
        Ok(id.strip_prefix("Running/process://").map(String::from))
    })
    .await?;
    seen.state = plane
        .kubeconfig()
        .parent()
        .context("state dir")?
        .to_path_buf();
    seen.pids.push(container.trim().parse()?);
    for entry in std::fs::read_dir(seen.state.join("pids"))? {
        seen.pids
            .push(std::fs::read_to_string(entry?.path())?.trim().parse()?);
    }
    seen.netns = pod_netns()?;
    ensure!(!seen.netns.is_empty(), "the pod has no network namespace");
    bail!("this test fails on purpose, with the pod running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_leaves_nothing_behind_but_logs() -> Result<()> {
    let mut seen = Footprint::default();
    let outcome = failing_test(&mut seen).await;
    match outcome {
        Err(e) if format!("{e:#}").contains("fails on purpose") => {}
        other => bail!("the failing test did not get as far as failing: {other:?}"),
    }
    let survivors: Vec<i32> = seen.pids.iter().copied().filter(|p| alive(*p)).collect();
    ensure!(
        survivors.is_empty(),
        "processes left running: {survivors:?}"
    );
    let left_ns: Vec<String> = pod_netns()?
        .into_iter()
        .filter(|ns| seen.netns.contains(ns))
        .collect();
    ensure!(
        left_ns.is_empty(),
        "pod network namespaces left: {left_ns:?}"
    );
    let left_mounts = mounts_under(&seen.state)?;
    ensure!(left_mounts.is_empty(), "mounts left: {left_mounts:?}");
    let bridge = std::process::Command::new("ip")
        .args(["link", "show", "rkk8s0"])
        .output()?;
    ensure!(!bridge.status.success(), "the pods' bridge rkk8s0 is left");
    let left: Vec<String> = std::fs::read_dir(&seen.state)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    ensure!(
        left == ["logs"],
        "{} holds more than the logs: {left:?}",
        seen.state.display()
    );
    Ok(())
}
