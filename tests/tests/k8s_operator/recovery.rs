//! Solo recovery as a user meets it: two of three members are lost with their
//! volumes, so the cluster has no quorum and stops serving; the user asks for
//! solo recovery in the spec and gets every acknowledged key back, on three
//! members again.
//!
//! The members are lost the way a machine failure loses them here: their
//! PersistentVolumeClaims are deleted (the real PVC-protection controller holds
//! them until their pods are gone) and then their pods. The StatefulSet brings
//! the pods back with new, empty volumes: members without data that can only
//! be added as new ones.

use crate::user::{
    container_pid, ensure_none_lost, events, jsonpath, keys, kubectl, lease_holder,
    member_endpoints, owned, patch_cluster, wait_settled, NS,
};
use anyhow::{bail, ensure, Context, Result};
use raftkv_tests::control_plane::ControlPlane;
use raftkv_tests::wait::until;
use raftkv_tests::Etcdctl;
use std::time::Duration;

/// Loses pods 1 and 2 of the 3-member RaftCluster `rc` with their volumes,
/// recovers from the survivor, and checks that every key in `acked` is back.
pub async fn lose_two_of_three_and_recover(
    plane: &ControlPlane,
    rc: &str,
    acked: &[String],
) -> Result<()> {
    // Every acknowledged write is on member 0, the one that will survive: a
    // linearizable read through it alone waits until it applied them all.
    let endpoints = member_endpoints(plane, rc).await?;
    ensure!(
        endpoints.len() == 3,
        "members before the loss: {endpoints:?}"
    );
    let survivor = &endpoints[..1];
    ensure_none_lost(acked, &keys(survivor, "w-").await?).context("on member 0 before the loss")?;

    let lost = [format!("{rc}-1"), format!("{rc}-2")];
    let claims: Vec<String> = owned(plane, rc, "pvc")
        .await?
        .into_iter()
        .filter(|c| lost.iter().any(|pod| c.ends_with(&format!("-{pod}"))))
        .collect();
    ensure!(claims.len() == 2, "the lost members' claims: {claims:?}");
    let mut delete_claims = vec!["delete", "-n", NS, "--wait=false"];
    delete_claims.extend(claims.iter().map(String::as_str));
    kubectl(plane, &delete_claims).await?;
    kubectl(
        plane,
        &["delete", "pod", "-n", NS, &lost[0], &lost[1], "--wait=true"],
    )
    .await?;
    // No quorum: the survivor refuses a linearizable read.
    until(
        Duration::from_secs(60),
        "member 0 to stop serving without quorum",
        || async {
            let read = Etcdctl::new(survivor)?
                .run(&["get", "w-000000", "--command-timeout=3s"])
                .await?;
            Ok((!read.success()).then_some(()))
        },
    )
    .await?;

    // The request, as the user writes it into the spec.
    patch_cluster(
        plane,
        rc,
        "merge",
        r#"{"spec":{"recovery":{"leaderlessSeconds":10,"solo":{"fromMember":"auto"}}}}"#,
    )
    .await?;
    let recovered = until(
        Duration::from_secs(600),
        "solo recovery to complete",
        || async {
            let progress = jsonpath(
                plane,
                &format!("rkc/{rc}"),
                "{.status.recovery.phase}/{.status.recovery.member}/{.status.recovery.message}",
            )
            .await?;
            // Refused is final for this generation: no use waiting on.
            match progress.split('/').next() {
                Some("Completed" | "Refused") => Ok(Some(progress)),
                _ => bail!("status.recovery phase/member/message = {progress}"),
            }
        },
    )
    .await?;
    ensure!(
        recovered.starts_with("Completed/0/"),
        "solo recovery did not complete from member 0: {recovered}"
    );
    wait_settled(plane, rc, 3, Duration::from_secs(300))
        .await
        .context("regrowing after solo recovery")?;

    let endpoints = member_endpoints(plane, rc).await?;
    ensure_none_lost(acked, &keys(&endpoints, "w-").await?).context("after solo recovery")?;
    let members = Etcdctl::new(&endpoints)?
        .run(&["member", "list"])
        .await?
        .ok()?
        .stdout;
    ensure!(
        members.lines().count() == 3,
        "after solo recovery, member list is:\n{members}"
    );
    let story = events(plane, rc).await?;
    ensure!(
        story.contains("SoloRecovery"),
        "no SoloRecovery event on rkc/{rc}:\n{story}"
    );
    // Done with it: the user takes the request out of the spec again.
    patch_cluster(
        plane,
        rc,
        "json",
        r#"[{"op":"remove","path":"/spec/recovery"}]"#,
    )
    .await?;
    Ok(())
}

/// The operator and member 0 end up on the minority side of a partition;
/// members 1 and 2 keep a quorum on the other side and stay Ready. A solo
/// recovery request then (a user reading member 0's "no leader") must reset
/// nobody: the operator cannot reach 1 and 2, but Kubernetes sees their pods
/// Ready, so they are not counted lost (issue 18, item 8; the operator used
/// to take "cannot reach" for "lost" and delete the majority's volumes).
pub async fn a_partitioned_operator_resets_nobody(
    plane: &ControlPlane,
    rc: &str,
    operator_ns: &str,
) -> Result<()> {
    let endpoints = member_endpoints(plane, rc).await?;
    ensure!(endpoints.len() == 3, "members: {endpoints:?}");
    let majority_ips: Vec<&str> = endpoints[1..]
        .iter()
        .map(|e| e.trim_end_matches(":2379"))
        .collect();
    let claim_uids = || async {
        let mut uids = Vec::new();
        for ordinal in [1, 2] {
            let claim = format!("pvc/data-{rc}-{ordinal}");
            uids.push(jsonpath(plane, &claim, "{.metadata.uid}").await?);
        }
        anyhow::Ok(uids)
    };
    let claims_before = claim_uids().await?;
    // What an earlier recovery left on record (Completed), or nothing.
    let recorded = jsonpath(plane, &format!("rkc/{rc}"), "{.status.recovery.phase}").await?;
    // The replica that reconciles: the one holding the leader Lease.
    let operator_pod = lease_holder(plane, operator_ns).await?;
    let cut_off = [
        container_pid(plane, NS, &format!("{rc}-0")).await?,
        container_pid(plane, operator_ns, &operator_pod).await?,
    ];
    for pid in cut_off {
        routes(pid, &majority_ips, "add")?;
    }
    let checked = async {
        patch_cluster(
            plane,
            rc,
            "merge",
            r#"{"spec":{"recovery":{"leaderlessSeconds":5,"solo":{"fromMember":"auto"}}}}"#,
        )
        .await?;
        // Member 0 goes leaderless for longer than leaderlessSeconds: all the
        // proof the operator can get from the members it reaches.
        let reason = "{.status.conditions[?(@.type==\"SoloRecovery\")].reason}";
        until(
            Duration::from_secs(120),
            "the operator to hold solo recovery back (UnreachableButReady)",
            || async {
                let now = jsonpath(plane, &format!("rkc/{rc}"), reason).await?;
                let phase =
                    jsonpath(plane, &format!("rkc/{rc}"), "{.status.recovery.phase}").await?;
                ensure!(
                    phase == recorded,
                    "solo recovery started on the minority side (phase {phase:?} after \
                     {recorded:?}, reason {now})"
                );
                Ok((now == "UnreachableButReady").then_some(()))
            },
        )
        .await?;
        ensure!(
            claim_uids().await? == claims_before,
            "the majority's volumes were replaced"
        );
        // The majority served all along.
        Etcdctl::new(&endpoints[1..])?
            .run(&["put", "partition-majority", "served"])
            .await?
            .ok()
            .context("a write through the majority side")?;
        anyhow::Ok(())
    }
    .await;
    for pid in cut_off {
        routes(pid, &majority_ips, "del")?;
    }
    checked?;
    patch_cluster(
        plane,
        rc,
        "json",
        r#"[{"op":"remove","path":"/spec/recovery"}]"#,
    )
    .await?;
    wait_settled(plane, rc, 3, Duration::from_secs(300))
        .await
        .context("after the partition healed")
}

/// `ip route add|del blackhole IP/32` for each of `ips`, in the network
/// namespace of process `pid`: that process can no longer reach them (and
/// they cannot hold a connection to it), while everything else still can.
fn routes(pid: i32, ips: &[&str], op: &str) -> Result<()> {
    for ip in ips {
        let host = format!("{ip}/32");
        let out = std::process::Command::new("nsenter")
            .args(["--net", &format!("--target={pid}"), "ip", "route", op])
            .args(["blackhole", &host])
            .output()
            .context("running nsenter")?;
        ensure!(
            out.status.success(),
            "ip route {op} blackhole {host} in the netns of {pid}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
