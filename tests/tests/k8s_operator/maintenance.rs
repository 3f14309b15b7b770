//! Scheduled maintenance (`spec.maintenance`, issue 18): compaction every
//! minute keeping a few revisions, and a defragmentation round every minute,
//! one member at a time with the leader last. Run on the TLS cluster, so
//! every call the operator makes for it goes over TLS with its client
//! certificate.

use crate::user::{jsonpath, patch_cluster};
use anyhow::{bail, ensure, Result};
use raftkv_tests::control_plane::ControlPlane;
use raftkv_tests::wait::until;
use raftkv_tests::Etcdctl;
use std::time::Duration;

/// Revisions kept by the compaction.
const RETAIN: i64 = 20;

pub async fn compacts_and_defragments_on_schedule(
    plane: &ControlPlane,
    rc: &str,
    etcdctl: &Etcdctl,
) -> Result<()> {
    patch_cluster(
        plane,
        rc,
        "merge",
        &format!(
            r#"{{"spec":{{"maintenance":{{"compaction":{{"schedule":"* * * * *","retainRevisions":{RETAIN}}},"defragmentation":{{"schedule":"* * * * *"}}}}}}}}"#
        ),
    )
    .await?;
    let object = format!("rkc/{rc}");
    let compacted: i64 = until(
        Duration::from_secs(150),
        "a scheduled compaction",
        || async {
            let revision = jsonpath(
                plane,
                &object,
                "{.status.maintenance.lastCompaction.revision}",
            )
            .await?;
            match revision.parse::<i64>() {
                Ok(r) if r > 0 => Ok(Some(r)),
                _ => bail!("status.maintenance.lastCompaction.revision is {revision:?}"),
            }
        },
    )
    .await?;
    // History before the compacted revision is gone, as etcd says it.
    let old = etcdctl
        .run(&["get", "greeting", &format!("--rev={}", compacted - 1)])
        .await?
        .failed()?;
    ensure!(
        old.stderr.contains("required revision has been compacted"),
        "reading below the compaction: {}",
        old.stderr
    );
    let done = until(
        Duration::from_secs(150),
        "a finished defragmentation round",
        || async {
            let round = jsonpath(
                plane,
                &object,
                "{.status.maintenance.defragmentation.completedTime}|{.status.maintenance.defragmentation.done}",
            )
            .await?;
            match round.split_once('|') {
                Some((completed, done)) if !completed.is_empty() => Ok(Some(done.to_string())),
                _ => bail!("status.maintenance.defragmentation is {round:?}"),
            }
        },
    )
    .await?;
    let done: Vec<u32> = serde_json::from_str(&done)?;
    let leader = jsonpath(plane, &object, "{.status.leader}").await?;
    ensure!(
        done.len() == 3 && leader.ends_with(&format!("-{}", done[2])),
        "defragmented {done:?}; the leader ({leader}) must be the last of three"
    );
    println!("maintenance: compacted to revision {compacted}; defragmented pods {done:?}, leader {leader} last");
    let phase = jsonpath(plane, &object, "{.status.phase}").await?;
    ensure!(phase == "Running", "phase after maintenance: {phase}");
    Ok(())
}
