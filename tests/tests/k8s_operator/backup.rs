//! Scheduled backups and restore as a user meets them: a RaftCluster backs up
//! every minute into a shared ReadWriteMany claim, and a new RaftCluster
//! started from one of those files holds the same keys, values and revision.

use crate::user::{apply, events, jsonpath, kubectl, member_endpoints, owned, wait_settled, NS};
use anyhow::{bail, ensure, Context, Result};
use raftkv_tests::control_plane::ControlPlane;
use raftkv_tests::wait::until;
use raftkv_tests::Etcdctl;
use std::path::Path;
use std::time::Duration;

const SOURCE: &str = "orders";
const RESTORED: &str = "restored";
const CLAIM: &str = "raftkv-backups";
const KEYS: usize = 200;

fn cluster(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: raftkv.io/v1alpha1\nkind: RaftCluster\nmetadata:\n  name: {name}\n\
         spec:\n  replicas: 3\n  image: raftkv:0.1.0\n{extra}"
    )
}

/// `etcdctl get PREFIX --prefix` through `endpoints`: keys and values, and the
/// store revision the read was served at.
async fn dump(endpoints: &[String], prefix: &str) -> Result<(String, i64)> {
    let etcdctl = Etcdctl::new(endpoints)?;
    let pairs = etcdctl
        .run(&["get", prefix, "--prefix"])
        .await?
        .ok()?
        .stdout;
    let json = etcdctl
        .run(&["get", prefix, "--prefix", "--limit=1", "-w", "json"])
        .await?
        .ok()?
        .stdout;
    let header: serde_json::Value = serde_json::from_str(&json)?;
    let revision = header["header"]["revision"]
        .as_i64()
        .with_context(|| format!("no revision in {json}"))?;
    Ok((pairs, revision))
}

pub async fn scheduled_backup_and_restore(plane: &ControlPlane) -> Result<()> {
    apply(
        plane,
        &format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {CLAIM}\n\
             spec:\n  accessModes: [ReadWriteMany]\n  storageClassName: standard\n  \
             resources:\n    requests:\n      storage: 1Gi\n"
        ),
    )
    .await?;
    apply(
        plane,
        &cluster(
            SOURCE,
            &format!(
                "  snapshot:\n    schedule: \"* * * * *\"\n    retain: 3\n    \
                 volume:\n      claimName: {CLAIM}\n"
            ),
        ),
    )
    .await?;
    wait_settled(plane, SOURCE, 3, Duration::from_secs(300)).await?;
    let source = member_endpoints(plane, SOURCE).await?;
    let mut client = etcd_client::Client::connect(&source, None).await?;
    for i in 0..KEYS {
        client
            .put(format!("o-{i:04}"), format!("order {i}"), None)
            .await?;
    }
    let (written, written_at) = dump(&source, "o-").await?;
    ensure!(
        written.lines().count() == 2 * KEYS,
        "the source holds:\n{written}"
    );

    // A backup taken after the writes appears in status, as an event, and as
    // a file of the reported size on the shared volume.
    let last = "{.status.lastSnapshot.revision}/{.status.lastSnapshot.file}/{.status.lastSnapshot.sizeBytes}";
    let (revision, file, size) = until(
        Duration::from_secs(180),
        format!("a scheduled backup of rkc/{SOURCE} at revision {written_at} or later"),
        || async {
            let snapshot = jsonpath(plane, &format!("rkc/{SOURCE}"), last).await?;
            let fields: Vec<&str> = snapshot.split('/').collect();
            match fields[..] {
                [rev, file, size] if rev.parse::<i64>().is_ok_and(|r| r >= written_at) => Ok(Some(
                    (rev.parse::<i64>()?, file.to_string(), size.parse::<u64>()?),
                )),
                _ => bail!("status.lastSnapshot revision/file/size = {snapshot}"),
            }
        },
    )
    .await?;
    let succeeded = jsonpath(
        plane,
        &format!("rkc/{SOURCE}"),
        "{.status.conditions[?(@.type==\"BackupSucceeded\")].status}",
    )
    .await?;
    ensure!(succeeded == "True", "BackupSucceeded is {succeeded:?}");
    let story = events(plane, SOURCE).await?;
    ensure!(
        story.contains("BackupTaken"),
        "no BackupTaken event on rkc/{SOURCE}:\n{story}"
    );
    let volume = jsonpath(plane, &format!("pvc/{CLAIM}"), "{.spec.volumeName}").await?;
    let dir = kubectl(
        plane,
        &["get", "pv", &volume, "-o", "jsonpath={.spec.hostPath.path}"],
    )
    .await?;
    let on_disk = std::fs::metadata(Path::new(dir.trim()).join(&file))
        .with_context(|| format!("backup {file} in the claim's directory {dir}"))?
        .len();
    ensure!(
        on_disk == size,
        "backup {file} is {on_disk} bytes on the volume, status says {size}"
    );

    // A new cluster from that file: the same keys, values and revision.
    apply(
        plane,
        &cluster(
            RESTORED,
            &format!(
                "  restore:\n    fromBackup: {file}\n  snapshot:\n    schedule: \"0 3 * * *\"\n    \
                 volume:\n      claimName: {CLAIM}\n  storage:\n    whenDeleted: Delete\n"
            ),
        ),
    )
    .await?;
    wait_settled(plane, RESTORED, 3, Duration::from_secs(600)).await?;
    let from = jsonpath(
        plane,
        &format!("rkc/{RESTORED}"),
        "{.status.initialized.restoredFrom}",
    )
    .await?;
    ensure!(from == file, "status.initialized.restoredFrom is {from:?}");
    let restored = member_endpoints(plane, RESTORED).await?;
    let (copy, copy_at) = dump(&restored, "o-").await?;
    ensure!(
        copy == written,
        "rkc/{RESTORED} holds other data than rkc/{SOURCE} did:\n{copy}"
    );
    ensure!(
        copy_at == revision,
        "rkc/{RESTORED} is at revision {copy_at}, its backup at {revision}"
    );
    // Each member holds it, also the two that joined empty (a serializable
    // read answers from the member's own store).
    for member in &restored {
        let local = Etcdctl::new(std::slice::from_ref(member))?
            .run(&["get", "o-", "--prefix", "--consistency=s"])
            .await?
            .ok()?
            .stdout;
        ensure!(
            local == written,
            "member {member} of rkc/{RESTORED} holds:\n{local}"
        );
    }

    // That cluster asked for its volumes to go with it (whenDeleted: Delete).
    kubectl(plane, &["delete", "rkc", "-n", NS, RESTORED, "--wait=true"]).await?;
    until(
        Duration::from_secs(120),
        format!("the volumes of rkc/{RESTORED} deleted with it"),
        || async {
            let left = owned(plane, RESTORED, "pvc").await?;
            if left.is_empty() {
                Ok(Some(()))
            } else {
                bail!("still there: {left:?}")
            }
        },
    )
    .await?;
    Ok(())
}
