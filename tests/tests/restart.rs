//! A whole-cluster restart resumes from disk: after SIGTERM of every member, and
//! again after `kill -9` of every member, every acknowledged key has its last
//! acknowledged value, deleted keys stay deleted, and the store revision is
//! exactly what it was.

use anyhow::{ensure, Result};
use raftkv_tests::kv::{diff_maps, get_prefix, get_value, revision};
use raftkv_tests::Cluster;
use std::collections::BTreeMap;

const KEYS: usize = 200;

/// What the workload left in the store.
struct Workload {
    expected: BTreeMap<String, String>,
    deleted: Vec<String>,
    revision: i64,
}

fn key(i: usize) -> String {
    format!("restart/{i:03}")
}

/// Put 200 keys, overwrite every 5th, delete every 7th; return what must survive.
async fn write_workload(cluster: &Cluster) -> Result<Workload> {
    let mut client = cluster.client().await?;
    let mut expected = BTreeMap::new();
    let mut first_revision = None;
    let mut mutations = 0i64;
    for i in 0..KEYS {
        let resp = client.put(key(i), format!("v{i}"), None).await?;
        first_revision.get_or_insert(revision(resp.header())?);
        expected.insert(key(i), format!("v{i}"));
        mutations += 1;
    }
    for i in (0..KEYS).step_by(5) {
        client
            .put(key(i), format!("v{i}-overwritten"), None)
            .await?;
        expected.insert(key(i), format!("v{i}-overwritten"));
        mutations += 1;
    }
    let mut deleted = Vec::new();
    for i in (3..KEYS).step_by(7) {
        let resp = client.delete(key(i), None).await?;
        ensure!(
            resp.deleted() == 1,
            "delete {} deleted {}",
            key(i),
            resp.deleted()
        );
        expected.remove(&key(i));
        deleted.push(key(i));
        mutations += 1;
    }
    let (stored, rev) = get_prefix(&mut client, "restart/").await?;
    diff_maps(&expected, &stored)?;
    // Each put and each delete that removes a key makes exactly one new revision.
    let first = first_revision.unwrap_or_default();
    ensure!(
        rev == first + mutations - 1,
        "store revision {rev} after {mutations} mutations starting at revision {first}"
    );
    Ok(Workload {
        expected,
        deleted,
        revision: rev,
    })
}

/// Every member holds exactly the workload's data at exactly its revision.
async fn verify(cluster: &Cluster, workload: &Workload, when: &str) -> Result<()> {
    for m in cluster.members() {
        let mut client = m.client().await?;
        let (actual, rev) = get_prefix(&mut client, "restart/").await?;
        diff_maps(&workload.expected, &actual)
            .map_err(|e| e.context(format!("data on {} {when}", m.name)))?;
        ensure!(
            rev == workload.revision,
            "{} answers at revision {rev} {when}, the store was at {} before",
            m.name,
            workload.revision
        );
        for k in workload.deleted.iter().take(5) {
            let value = get_value(&mut client, k).await?;
            ensure!(
                value.is_none(),
                "deleted {k} is back on {} {when}: {value:?}",
                m.name
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_all_members_then_restart_keeps_everything() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let workload = write_workload(&cluster).await?;

    cluster.stop_all().await?;
    for m in cluster.members() {
        // Not asserting a clean exit code: the interface does not fix it. A member
        // that needed SIGKILL is reported by stop_all on stderr.
        eprintln!("{} exited with {:?}", m.name, m.last_exit());
    }
    cluster.restart(&[1, 2, 3]).await?;
    cluster.wait_leader_all().await?;
    verify(&cluster, &workload, "after SIGTERM and restart").await?;

    // The cluster still takes writes after the restart, at the next revision.
    let put = cluster
        .client()
        .await?
        .put("restart/after", "yes", None)
        .await?;
    ensure!(
        revision(put.header())? == workload.revision + 1,
        "first put after restart got revision {}, expected {}",
        revision(put.header())?,
        workload.revision + 1
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_all_members_then_restart_keeps_everything() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let workload = write_workload(&cluster).await?;

    cluster.kill9_all()?;
    cluster.restart(&[1, 2, 3]).await?;
    cluster.wait_leader_all().await?;
    verify(&cluster, &workload, "after kill -9 and restart").await?;

    // And once more, so recovery also works from a state that was itself recovered.
    cluster.kill9_all()?;
    cluster.restart(&[1, 2, 3]).await?;
    cluster.wait_leader_all().await?;
    verify(&cluster, &workload, "after a second kill -9 and restart").await?;
    Ok(())
}

/// What interrupted snapshots leave behind (issue 17, item 8): a member killed
/// while it built, installed or received a snapshot leaves a temporary file
/// that nothing reads again. A restart removes them and keeps real snapshots.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_removes_what_interrupted_snapshots_left() -> Result<()> {
    let mut cluster = raftkv_tests::ClusterOptions::new()
        .arg("--snapshot-count", 20)
        .start(1)
        .await?;
    let workload = write_workload(&cluster).await?;
    cluster.kill9_all()?;
    let dir = cluster.members()[0].data_dir().join("snapshots");
    let snapshots = |dir: &std::path::Path| -> Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(dir)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
        names.sort();
        Ok(names)
    };
    let kept = snapshots(&dir)?;
    ensure!(
        kept.iter().any(|n| n.ends_with(".snap")),
        "no snapshot after the workload with --snapshot-count 20: {kept:?}"
    );
    let leftovers = ["incoming-42.part", "building-4242.tmp", "snap-1-1.tmp"];
    for name in leftovers {
        std::fs::write(dir.join(name), vec![7u8; 1 << 20])?;
    }
    cluster.restart(&[1]).await?;
    cluster.wait_leader_all().await?;
    let after = snapshots(&dir)?;
    ensure!(
        after.iter().all(|n| !leftovers.contains(&n.as_str())),
        "left after the restart: {after:?}"
    );
    ensure!(
        kept.iter().all(|n| after.contains(n)) || after.iter().any(|n| n.ends_with(".snap")),
        "the restart lost the real snapshots: {kept:?} -> {after:?}"
    );
    verify(
        &cluster,
        &workload,
        "after a restart that removed leftovers",
    )
    .await?;
    Ok(())
}
