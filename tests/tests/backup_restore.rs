//! Backups and restore: `etcdctl snapshot save` and `raftkv snapshot save`
//! against raftkv, `raftkv snapshot status|restore` on their files, a restored
//! single-member cluster identical to the source (keys, values, revisions), a
//! damaged file refused before anything is written, on-demand Raft snapshots,
//! the member-side backup calls, and Initialize from a backup.

use anyhow::{ensure, Context, Result};
use raftkv_tests::admin::{dump, field_u64, member_status};
use raftkv_tests::cli::raftkv;
use raftkv_tests::{Cluster, ClusterOptions, Etcdctl, Ports, RaftkvCli};
use std::path::Path;

/// Keys with history: puts, overwrites, deletes, so revisions differ from
/// versions and the store revision is past the last live key.
async fn fill(cluster: &Cluster) -> Result<()> {
    let mut client = cluster.client().await?;
    for i in 0..60 {
        client
            .put(format!("b/{i:03}"), format!("value-{i}"), None)
            .await?;
    }
    for i in 0..20 {
        client
            .put(format!("b/{i:03}"), format!("again-{i}"), None)
            .await?;
    }
    client.delete("b/059", None).await?;
    Ok(())
}

fn s(p: &Path) -> String {
    p.to_string_lossy().to_string()
}

/// Restore `file` into a new member's data dir, start it alone, and check it
/// holds exactly what `source` holds.
async fn restore_and_compare(cluster: &mut Cluster, file: &Path, id: u64) -> Result<()> {
    let mut source = cluster.client().await?;
    let expected = dump(&mut source).await?;
    let ports = Ports::allocate()?;
    let data_dir = cluster.next_member_data_dir();
    let out = raftkv(&[
        "snapshot",
        "restore",
        &s(file),
        "--data-dir",
        &s(&data_dir),
        "--name",
        "restored",
        "--id",
        &id.to_string(),
        "--initial-advertise-peer-urls",
        &ports.peer_url(),
    ])
    .await?
    .ok()?;
    ensure!(out.stdout.contains("restored"), "{:?}", out.stdout);
    let member = cluster.add_member(id, ports, &[])?;
    member
        .wait_ready()
        .await
        .context("the restored member starts")?;
    let mut restored = member.client().await?;
    let got = dump(&mut restored).await?;
    ensure!(
        got == expected,
        "restored store differs: {} keys at revision {} vs {} keys at revision {}",
        got.0.len(),
        got.1,
        expected.0.len(),
        expected.1
    );
    // A new cluster: its own id; and it takes writes.
    let old_id = source.status().await?.header().map(|h| h.cluster_id());
    let new_id = restored.status().await?.header().map(|h| h.cluster_id());
    ensure!(
        old_id != new_id,
        "restored cluster kept the cluster id {old_id:?}"
    );
    restored.put("b/new", "x", None).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_snapshot_is_restored_into_an_identical_new_cluster() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    fill(&cluster).await?;
    let file = cluster.root().join("etcdctl.db");
    Etcdctl::new(&cluster.endpoints())?
        .run(&["snapshot", "save", &s(&file)])
        .await?
        .ok()?;
    let status = raftkv(&["snapshot", "status", &s(&file)]).await?.ok()?;
    ensure!(
        status.stdout.contains("keys: 59") && status.stdout.contains("sha256: "),
        "status: {:?}",
        status.stdout
    );
    restore_and_compare(&mut cluster, &file, 9).await
}

#[tokio::test(flavor = "multi_thread")]
async fn raftkv_snapshot_save_restores_and_damaged_files_are_refused() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    fill(&cluster).await?;
    let file = cluster.root().join("backup.db");
    let cli = RaftkvCli::new(&cluster.endpoints())?;
    let saved = cli.run(&["snapshot", "save", &s(&file)]).await?.ok()?;
    ensure!(saved.stdout.contains("59 keys"), "{:?}", saved.stdout);

    let bytes = std::fs::read(&file)?;
    let damaged = cluster.root().join("damaged.db");
    for (what, content) in [
        ("a flipped byte", {
            let mut b = bytes.clone();
            let at = b.len() / 3;
            b[at] ^= 0x01;
            b
        }),
        ("a truncated file", bytes[..bytes.len() - 700].to_vec()),
    ] {
        std::fs::write(&damaged, &content)?;
        let target = cluster.root().join("never-created");
        let out = raftkv(&[
            "snapshot",
            "restore",
            &s(&damaged),
            "--data-dir",
            &s(&target),
        ])
        .await?
        .failed()?;
        ensure!(
            out.stderr.contains("corrupt") && out.stderr.lines().count() == 1,
            "{what}: {:?}",
            out.stderr
        );
        ensure!(!target.exists(), "{what}: the data dir was created");
        raftkv(&["snapshot", "status", &s(&damaged)])
            .await?
            .failed()?;
    }
    restore_and_compare(&mut cluster, &file, 7).await
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_now_and_member_side_backups() -> Result<()> {
    let cluster = ClusterOptions::new().start(1).await?;
    fill(&cluster).await?;
    let endpoint = cluster.members()[0].client_endpoint();
    let cli = RaftkvCli::new(std::slice::from_ref(&endpoint))?;

    let before = member_status(&endpoint).await?;
    let out = cli.run(&["snapshot", "now"]).await?.ok()?;
    let after = member_status(&endpoint).await?;
    let applied = field_u64(&before, "applied_index")?;
    ensure!(
        field_u64(&after, "snapshot_index")? >= applied
            && field_u64(&after, "purged_index")? >= applied
            && field_u64(&after, "purged_index")? > field_u64(&before, "purged_index")?,
        "snapshot now ({:?}): before {before:?}, after {after:?}",
        out.stdout
    );

    let backup_dir = cluster.members()[0].data_dir().join("backups");
    cli.run(&["backup", "save", "nightly-1.db"]).await?.ok()?;
    let path = backup_dir.join("nightly-1.db");
    ensure!(path.is_file(), "no backup file at {}", path.display());
    let status = raftkv(&["snapshot", "status", &s(&path)]).await?.ok()?;
    ensure!(status.stdout.contains("keys: 59"), "{:?}", status.stdout);
    let dup = cli
        .run(&["backup", "save", "nightly-1.db"])
        .await?
        .failed()?;
    ensure!(dup.stderr.contains("already exists"), "{:?}", dup.stderr);
    let bad = cli.run(&["backup", "save", "../escape"]).await?.failed()?;
    ensure!(bad.stderr.contains("plain name"), "{:?}", bad.stderr);
    let list = cli.run(&["backup", "list"]).await?.ok()?;
    ensure!(
        list.stdout.starts_with("nightly-1.db "),
        "{:?}",
        list.stdout
    );
    cli.run(&["backup", "delete", "nightly-1.db"]).await?.ok()?;
    ensure!(!path.exists(), "deleted backup still on disk");
    let list = cli.run(&["backup", "list"]).await?.ok()?;
    ensure!(list.stdout.trim().is_empty(), "{:?}", list.stdout);
    cli.run(&["backup", "delete", "nightly-1.db"])
        .await?
        .failed()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn initialize_restores_a_backup_on_a_joining_member() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    fill(&cluster).await?;
    let endpoint = cluster.members()[0].client_endpoint();
    let cli = RaftkvCli::new(std::slice::from_ref(&endpoint))?;
    cli.run(&["backup", "save", "seed.db"]).await?.ok()?;
    let mut source = cluster.client().await?;
    let expected = dump(&mut source).await?;
    let seed = cluster.members()[0].data_dir().join("backups/seed.db");

    let ports = Ports::allocate()?;
    let joiner_endpoint = ports.client_endpoint();
    let backups = cluster.next_member_data_dir().join("backups");
    std::fs::create_dir_all(&backups)?;
    std::fs::copy(&seed, backups.join("seed.db"))?;
    let member = cluster.add_joiner(8, ports)?;
    let jcli = RaftkvCli::new(std::slice::from_ref(&joiner_endpoint))?;
    // A damaged backup is refused and nothing changes.
    let mut bytes = std::fs::read(backups.join("seed.db"))?;
    bytes[600] ^= 0x02;
    std::fs::write(backups.join("bad.db"), &bytes)?;
    let init = |name: &'static str| {
        let jcli = jcli.clone();
        async move {
            jcli.run(&[
                "initialize",
                "--cluster-token",
                "restored-uid",
                "--restore-from-backup",
                name,
            ])
            .await
        }
    };
    let refused = raftkv_tests::wait::until(
        raftkv_tests::wait::READY_TIMEOUT,
        "the joiner to answer Initialize",
        || async {
            let out = init("bad.db").await?;
            Ok((!out.stderr.contains("connect")).then_some(out))
        },
    )
    .await?;
    ensure!(
        !refused.success() && refused.stderr.contains("corrupt"),
        "{:?}",
        refused.stderr
    );
    let ok = init("seed.db").await?.ok()?;
    ensure!(
        ok.stdout.starts_with("Initialized cluster"),
        "{:?}",
        ok.stdout
    );
    member.wait_ready().await?;
    let mut restored = member.client().await?;
    let got = dump(&mut restored).await?;
    ensure!(got == expected, "restored store differs from the source");
    let again = init("seed.db").await?.ok()?;
    ensure!(
        again.stdout.starts_with("Already initialized"),
        "{:?}",
        again.stdout
    );
    Ok(())
}
