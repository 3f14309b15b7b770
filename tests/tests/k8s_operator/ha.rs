//! Two operator replicas (the chart's default), one reconciling: the one that
//! holds the leader Lease is killed in the middle of a scale, and the standby,
//! which reconciled nothing until then, takes over and finishes the same
//! scale; no membership step is carried out twice.

use crate::user::{container_pid, jsonpath, jsonpath_in, kubectl, lease_holder, wait_settled, NS};
use anyhow::{bail, ensure, Context, Result};
use raftkv_tests::control_plane::ControlPlane;
use raftkv_tests::wait::until;
use std::collections::BTreeMap;
use std::time::Duration;

/// How many reconciles the operator pod at `ip` has started (its /metrics).
async fn reconciles(ip: &str) -> Result<u64> {
    let metrics = raftkv_tests::http::get(&format!("{ip}:8080"), "/metrics").await?;
    metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("raftkv_operator_reconciles_total "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no reconcile count in the metrics of {ip}"))
}

/// Scales `rc` from 3 to `to`, killing the leading operator replica once the
/// first new pod exists.
pub async fn kill_the_leading_operator_mid_scale(
    plane: &ControlPlane,
    rc: &str,
    operator_ns: &str,
    to: usize,
) -> Result<()> {
    let leader = lease_holder(plane, operator_ns).await?;
    let pods = jsonpath_in(
        plane,
        operator_ns,
        "pods",
        "{range .items[*]}{.metadata.name} {.status.podIP}{\"\\n\"}{end}",
    )
    .await?;
    let pods: BTreeMap<&str, &str> = pods.lines().filter_map(|l| l.split_once(' ')).collect();
    ensure!(
        pods.len() == 2 && pods.contains_key(leader.as_str()),
        "operator pods {pods:?}, Lease held by {leader:?}"
    );
    let (standby, standby_ip) = pods
        .iter()
        .find(|(name, _)| **name != leader)
        .map(|(n, ip)| (n.to_string(), ip.to_string()))
        .context("no standby")?;
    ensure!(
        reconciles(&standby_ip).await? == 0,
        "the standby {standby} reconciled while {leader} led"
    );

    kubectl(
        plane,
        &[
            "scale",
            "-n",
            NS,
            &format!("rkc/{rc}"),
            &format!("--replicas={to}"),
        ],
    )
    .await?;
    until(
        Duration::from_secs(120),
        "the StatefulSet to grow by one pod",
        || async {
            let replicas = jsonpath(plane, &format!("sts/{rc}"), "{.spec.replicas}").await?;
            Ok((replicas.parse::<usize>().unwrap_or(0) > 3).then_some(()))
        },
    )
    .await?;
    let pid = container_pid(plane, operator_ns, &leader).await?;
    // SAFETY: kill(2) on the pid of an operator process this test's node runs.
    unsafe { libc::kill(pid, libc::SIGKILL) };

    wait_settled(plane, rc, to, Duration::from_secs(300))
        .await
        .context("the standby finishing the scale")?;
    let now = lease_holder(plane, operator_ns).await?;
    ensure!(
        now == standby,
        "the Lease is held by {now:?}, not the standby {standby}"
    );
    ensure!(
        reconciles(&standby_ip).await? > 0,
        "the standby never reconciled"
    );
    each_step_once(plane, rc).await
}

/// Every membership step's event was published once: none was repeated by
/// the replica that took over (a repeat shows as a second event, or as a
/// series on one).
async fn each_step_once(plane: &ControlPlane, rc: &str) -> Result<()> {
    let events = kubectl(
        plane,
        &["get", "events.events.k8s.io", "-n", NS, "-o", "json"],
    )
    .await?;
    let events: serde_json::Value = serde_json::from_str(&events)?;
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for event in events["items"].as_array().context("event items")? {
        if event["regarding"]["name"] != rc {
            continue;
        }
        let reason = event["reason"].as_str().unwrap_or_default();
        if !["AddingLearner", "PromotingLearner"].contains(&reason) {
            continue;
        }
        let note = event["note"].as_str().unwrap_or_default().to_string();
        let count = event["series"]["count"].as_u64().unwrap_or(1);
        *seen.entry(note).or_default() += count;
    }
    if seen.is_empty() {
        bail!("no AddingLearner or PromotingLearner event on {rc}");
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(
        repeated.is_empty(),
        "steps carried out more than once: {repeated:?}"
    );
    Ok(())
}
