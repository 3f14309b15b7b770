//! etcdctl's watch, lease, hashkv and snapshot commands against raftkv, checked
//! against what etcdctl prints for etcd.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use raftkv_tests::binaries::etcdctl_bin;
use raftkv_tests::etcdctl::Etcdctl;
use raftkv_tests::ClusterOptions;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Run `etcdctl watch ARGS` until it printed `lines` lines, then stop it.
async fn watch_lines(endpoint: &str, args: &[&str], lines: usize) -> Result<Vec<String>> {
    let mut child = tokio::process::Command::new(etcdctl_bin()?)
        .arg(format!("--endpoints={endpoint}"))
        .arg("watch")
        .args(args)
        .env("ETCDCTL_API", "3")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting etcdctl watch")?;
    let mut out = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let mut got = Vec::new();
    while got.len() < lines {
        let line = tokio::time::timeout(Duration::from_secs(20), out.next_line())
            .await
            .with_context(|| format!("etcdctl watch printed only {got:?}"))??
            .context("etcdctl watch exited")?;
        got.push(line);
    }
    child.kill().await.ok();
    Ok(got)
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_watch_lease_hashkv_and_snapshot_save() -> Result<()> {
    let cluster = ClusterOptions::new().start(3).await?;
    let endpoints = cluster.endpoints();
    let ctl = Etcdctl::new(&endpoints)?;
    let one = Etcdctl::new(&endpoints[1..2])?;

    // watch --rev replays history; --prev-kv prints the previous value.
    let put = one.run(&["put", "wk", "v1", "-w", "json"]).await?.ok()?;
    let json: serde_json::Value = serde_json::from_str(&put.stdout)?;
    let rev = json["header"]["revision"].as_i64().context("no revision")?;
    one.run(&["put", "wk", "v2"]).await?.ok()?;
    let lines = watch_lines(
        &endpoints[2],
        &["wk", &format!("--rev={rev}"), "--prev-kv"],
        7,
    )
    .await?;
    ensure!(
        lines == ["PUT", "wk", "v1", "PUT", "wk", "v1", "wk"],
        "etcdctl watch --rev --prev-kv printed {lines:?}"
    );

    // lease grant / put --lease / timetolive --keys / keep-alive --once / revoke.
    let grant = ctl.run(&["lease", "grant", "60"]).await?.ok()?;
    // "lease 694d7a6a5a1ff32c granted with TTL(60s)"
    let id = grant
        .stdout
        .split_whitespace()
        .nth(1)
        .context("no lease id")?
        .to_string();
    ensure!(
        grant.stdout.trim().ends_with("granted with TTL(60s)"),
        "grant printed {:?}",
        grant.stdout
    );
    ctl.run(&["put", "leased", "x", &format!("--lease={id}")])
        .await?
        .ok()?;
    let ttl = ctl
        .run(&["lease", "timetolive", &id, "--keys"])
        .await?
        .ok()?;
    ensure!(
        ttl.stdout
            .contains(&format!("lease {id} granted with TTL(60s), remaining("))
            && ttl.stdout.contains("attached keys([leased])"),
        "timetolive printed {:?}",
        ttl.stdout
    );
    let ka = ctl
        .run(&["lease", "keep-alive", "--once", &id])
        .await?
        .ok()?;
    ensure!(
        ka.stdout.trim() == format!("lease {id} keepalived with TTL(60)"),
        "keep-alive printed {:?}",
        ka.stdout
    );
    let list = ctl.run(&["lease", "list"]).await?.ok()?;
    ensure!(
        list.stdout.contains("found 1 leases") && list.stdout.contains(&id),
        "lease list printed {:?}",
        list.stdout
    );
    let revoke = ctl.run(&["lease", "revoke", &id]).await?.ok()?;
    ensure!(
        revoke.stdout.trim() == format!("lease {id} revoked"),
        "revoke printed {:?}",
        revoke.stdout
    );
    let gone = ctl.run(&["get", "leased"]).await?.ok()?;
    ensure!(
        gone.stdout.is_empty(),
        "revoked lease's key still there: {:?}",
        gone.stdout
    );

    // endpoint hashkv: one line per endpoint, all with the same hash.
    let hashkv = ctl.run(&["endpoint", "hashkv", "-w", "json"]).await?.ok()?;
    let parsed: serde_json::Value = serde_json::from_str(&hashkv.stdout)?;
    let hashes: Vec<u64> = parsed
        .as_array()
        .context("hashkv json is not a list")?
        .iter()
        .map(|e| e["HashKV"]["hash"].as_u64().unwrap_or(0))
        .collect();
    ensure!(
        hashes.len() == 3 && hashes.iter().all(|h| *h == hashes[0] && *h != 0),
        "hashes {hashes:?}"
    );

    // snapshot save writes the stream to a file.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("backup.db");
    let saved = one
        .run(&["snapshot", "save", file.to_str().context("path")?])
        .await?
        .ok()?;
    ensure!(
        saved.stdout.contains("Snapshot saved at"),
        "snapshot save printed {:?}",
        saved.stdout
    );
    let bytes = std::fs::read(&file)?;
    ensure!(
        bytes.len() > 512 && bytes.len() % 512 == 32,
        "snapshot file has {} bytes",
        bytes.len()
    );
    let (content, sum) = bytes.split_at(bytes.len() - 32);
    use sha2::Digest;
    ensure!(
        sha2::Sha256::digest(content).as_slice() == sum,
        "snapshot SHA-256 trailer does not match"
    );
    ensure!(
        content.starts_with(b"RKVSNAP1"),
        "snapshot content is not a raftkv snapshot"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_watch_prefix_progress_and_move_leader() -> Result<()> {
    let mut cluster = ClusterOptions::new().start(3).await?;
    let endpoints = cluster.endpoints();
    let ctl = Etcdctl::new(&endpoints)?;

    // watch --prefix (live): events for keys under the prefix only.
    let watcher = {
        let ep = endpoints[0].clone();
        tokio::spawn(async move { watch_lines(&ep, &["pfx/", "--prefix"], 6).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctl.run(&["put", "pfx/a", "1"]).await?.ok()?;
    ctl.run(&["put", "other", "x"]).await?.ok()?;
    ctl.run(&["put", "pfx/b", "2"]).await?.ok()?;
    let lines = tokio::time::timeout(Duration::from_secs(20), watcher).await???;
    ensure!(
        lines == ["PUT", "pfx/a", "1", "PUT", "pfx/b", "2"],
        "watch --prefix printed {lines:?}"
    );

    // A progress request is answered with the current revision, for the stream.
    let mut c = cluster.client().await?;
    let rev = c
        .put("pfx/c", "3", None)
        .await?
        .header()
        .context("no header")?
        .revision();
    let mut stream = c
        .watch(
            "none/",
            Some(etcd_client::WatchOptions::new().with_prefix()),
        )
        .await?;
    stream.message().await?.context("no create response")?;
    stream.request_progress().await?;
    let progress = stream.message().await?.context("no progress response")?;
    ensure!(
        progress.events().is_empty() && progress.header().map(|h| h.revision()) == Some(rev),
        "progress response {progress:?}"
    );

    // move-leader, sent to the leader, hands leadership to the named member.
    let leader = cluster.wait_leader().await?;
    let target = cluster
        .live_ids()
        .into_iter()
        .find(|id| *id != leader)
        .context("no follower")?;
    let at_leader = Etcdctl::new(&[cluster.member(leader).client_endpoint()])?;
    let moved = at_leader
        .run(&["move-leader", &format!("{target:x}")])
        .await?
        .ok()?;
    ensure!(
        moved.stdout.contains(&format!(
            "Leadership transferred from {leader:x} to {target:x}"
        )),
        "move-leader printed {:?}",
        moved.stdout
    );
    ensure!(
        cluster.wait_leader().await? == target,
        "leadership did not move to {target:x}"
    );
    // As etcd 3.4, MoveLeader and Defragment answer without a response
    // header: etcdctl -w json prints etcd's move-leader answer as `{}`.
    let back = Etcdctl::new(&[cluster.member(target).client_endpoint()])?
        .run(&["-w", "json", "move-leader", &format!("{leader:x}")])
        .await?
        .ok()?;
    ensure!(
        back.stdout.trim() == "{}",
        "move-leader -w json printed {:?}",
        back.stdout
    );
    let mut client =
        etcd_client::Client::connect([cluster.member(leader).client_endpoint()], None).await?;
    let defragmented = client.defragment().await?;
    ensure!(
        defragmented.header().is_none(),
        "Defragment answered with a header: {defragmented:?}"
    );
    Ok(())
}
