//! Storage edits on a running cluster (issue 18, item 3): a bigger
//! `spec.storage.size` expands every member's volume in place while the
//! cluster keeps serving; what cannot be done (shrinking, another class) is
//! refused by the API server with a message that says why, and never reaches
//! the operator.

use super::user::{jsonpath, kubectl, owned, patch_cluster, NS};
use anyhow::{bail, ensure, Result};
use raftkv_tests::control_plane::ControlPlane;
use raftkv_tests::wait::until;
use std::time::Duration;

/// Grows the volumes of `rc` (running at `replicas`) to `size`; then checks
/// that a smaller size and another class are refused.
pub async fn grow_volumes_then_refuse_what_cannot_be_done(
    plane: &ControlPlane,
    rc: &str,
    replicas: usize,
    size: &str,
) -> Result<()> {
    let sts_uid = jsonpath(plane, &format!("sts/{rc}"), "{.metadata.uid}").await?;
    let before = jsonpath(plane, &format!("rkc/{rc}"), "{.spec.storage.size}").await?;
    patch_cluster(
        plane,
        rc,
        "merge",
        &format!(r#"{{"spec":{{"storage":{{"size":"{size}"}}}}}}"#),
    )
    .await?;
    until(
        Duration::from_secs(180),
        format!("every volume of {rc} expanded to {size}"),
        || async {
            let failed = jsonpath(
                plane,
                &format!("rkc/{rc}"),
                "{.status.conditions[?(@.type==\"ReconcileFailed\")].message}",
            )
            .await?;
            ensure!(failed.is_empty(), "the reconcile fails: {failed}");
            let claims = owned(plane, rc, "pvc").await?;
            ensure!(
                claims.len() == replicas,
                "{rc} has claims {claims:?}, not {replicas}"
            );
            for claim in &claims {
                let capacity = jsonpath(plane, claim, "{.status.capacity.storage}").await?;
                if capacity != size {
                    bail!("{claim} has capacity {capacity:?}");
                }
            }
            let condition = jsonpath(
                plane,
                &format!("rkc/{rc}"),
                "{.status.conditions[?(@.type==\"VolumesExpanded\")].status}",
            )
            .await?;
            Ok((condition == "True").then_some(()))
        },
    )
    .await?;
    let now = jsonpath(plane, &format!("sts/{rc}"), "{.metadata.uid}").await?;
    ensure!(
        now == sts_uid,
        "the StatefulSet was re-created ({sts_uid} -> {now}): its pods restarted"
    );

    // Volumes do not shrink, and cannot move to another class.
    for (patch, says) in [
        (
            format!(r#"{{"spec":{{"storage":{{"size":"{before}"}}}}}}"#),
            "cannot shrink",
        ),
        (
            r#"{"spec":{"storage":{"storageClassName":"another"}}}"#.to_string(),
            "storageClassName cannot change",
        ),
    ] {
        let out = plane
            .kubectl(
                &["patch", "rkc", rc, "-n", NS, "--type=merge", "-p", &patch],
                Duration::from_secs(60),
            )
            .await?;
        ensure!(
            !out.success() && out.stderr.contains(says),
            "kubectl patch {patch} should be refused saying {says:?}; it printed\n{}{}",
            out.stdout,
            out.stderr
        );
    }
    let kept = kubectl(
        plane,
        &[
            "get",
            "rkc",
            rc,
            "-n",
            NS,
            "-o",
            "jsonpath={.spec.storage.size}",
        ],
    )
    .await?;
    ensure!(
        kept == size,
        "spec.storage.size is {kept:?} after the refusals"
    );
    Ok(())
}
