//! Solo recovery after quorum loss: a survivor made a one-member cluster (by
//! the offline command and by Admin.RecoverSolo), grown back to three with fresh
//! members, with every acknowledged write it had; old members restarted with
//! their old data are refused and fence themselves; and a recovery asked of a
//! healthy cluster is refused and changes nothing.

use anyhow::{ensure, Context, Result};
use raftkv_tests::admin::{field_u64, member_status};
use raftkv_tests::cli::raftkv;
use raftkv_tests::files::copy_dir;
use raftkv_tests::kv::{get_value, get_value_serializable};
use raftkv_tests::wait::{self, CONVERGE_TIMEOUT, READY_TIMEOUT};
use raftkv_tests::{Cluster, ClusterOptions, CmdOutput, Ports, RaftkvCli};

const KEYS: usize = 40;

/// Write `KEYS` keys through the cluster and wait until member `survivor`
/// has applied them all (so every acknowledged write reached it).
async fn write_and_settle(cluster: &Cluster, survivor: u64) -> Result<()> {
    let mut client = cluster.client().await?;
    for i in 0..KEYS {
        client
            .put(format!("rec/{i:03}"), format!("v{i}"), None)
            .await
            .with_context(|| format!("put rec/{i:03}"))?;
    }
    let on_survivor = cluster.member(survivor).client().await?;
    let last = format!("rec/{:03}", KEYS - 1);
    wait::until(
        CONVERGE_TIMEOUT,
        "the survivor to apply every write",
        || {
            let mut c = on_survivor.clone();
            let last = last.clone();
            async move { Ok(get_value_serializable(&mut c, &last).await?.map(|_| ())) }
        },
    )
    .await
}

/// Kill members `ids`, keep a copy of their data dirs (to bring them back with
/// old data later), and delete the originals.
fn lose(cluster: &mut Cluster, ids: &[u64]) -> Result<()> {
    for &id in ids {
        let m = cluster.member_mut(id);
        m.kill9()?;
        let data = m.data_dir();
        copy_dir(&data, &data.with_file_name("old-data"))?;
        std::fs::remove_dir_all(&data)?;
    }
    Ok(())
}

/// `raftkv recover --solo --endpoints ENDPOINT --min-leaderless-millis 2000`
/// with `extra` flags, asked again while the member has not been leaderless
/// for long enough; its output once accepted.
async fn recover_once_leaderless(endpoint: &str, extra: &[String]) -> Result<CmdOutput> {
    let mut args: Vec<&str> = vec!["recover", "--solo", "--endpoints", endpoint];
    args.extend(["--min-leaderless-millis", "2000"]);
    args.extend(extra.iter().map(String::as_str));
    wait::until(CONVERGE_TIMEOUT, "RecoverSolo to be accepted", || {
        let args = args.clone();
        async move {
            let out = raftkv(&args).await?;
            if !out.success() {
                ensure!(
                    out.stderr.contains("no leader for"),
                    "unexpected refusal {:?}",
                    out.stderr
                );
                return Ok(None);
            }
            Ok(Some(out))
        }
    })
    .await
}

async fn assert_all_keys(endpoint: &str) -> Result<()> {
    let mut client = raftkv_tests::connect(&[endpoint.to_string()]).await?;
    for i in 0..KEYS {
        let key = format!("rec/{i:03}");
        let value = get_value(&mut client, &key).await?;
        ensure!(
            value.as_deref() == Some(format!("v{i}").as_str()),
            "{key} after recovery: {value:?}"
        );
    }
    Ok(())
}

/// Add a fresh member as a learner, wait until it is caught up, promote it.
async fn add_fresh_member(cluster: &mut Cluster, id: u64, leader_endpoint: &str) -> Result<()> {
    let ports = Ports::allocate()?;
    let peer = ports.peer_url();
    let cli = RaftkvCli::new(&[leader_endpoint.to_string()])?;
    cli.run(&[
        "member",
        "add",
        &format!("fresh{id}"),
        "--peer-urls",
        &peer,
        "--learner",
        "--id",
        &id.to_string(),
    ])
    .await?
    .ok()?;
    let member = cluster.add_joiner(id, ports)?;
    member
        .wait_ready()
        .await
        .context("the new learner becomes ready")?;
    let hex = format!("{id:x}");
    wait::until(CONVERGE_TIMEOUT, format!("promoting member {id}"), || {
        let cli = cli.clone();
        let hex = hex.clone();
        async move {
            let out = cli.run(&["member", "promote", &hex]).await?;
            Ok(out.success().then_some(()))
        }
    })
    .await
}

/// Members `ids` (restarted with their old data) end up fenced; a write to
/// them is refused saying so.
async fn assert_fenced(cluster: &mut Cluster, ids: &[u64]) -> Result<()> {
    for &id in ids {
        let m = cluster.member_mut(id);
        let data = m.data_dir();
        copy_dir(&data.with_file_name("old-data"), &data)?;
        m.restart()?;
    }
    for &id in ids {
        let endpoint = cluster.member(id).client_endpoint();
        wait::until(
            READY_TIMEOUT,
            format!("old member {id} to fence itself"),
            || {
                let endpoint = endpoint.clone();
                async move {
                    let st = member_status(&endpoint).await?;
                    let why = st.get("not_ready_reason").cloned().unwrap_or_default();
                    Ok(why.contains("fenced").then_some(()))
                }
            },
        )
        .await?;
        let put = RaftkvCli::new(&[endpoint])?
            .run(&["put", "stale/write", "x"])
            .await?
            .failed()?;
        ensure!(
            put.stderr.contains("fenced"),
            "a write on fenced member {id} said {:?}",
            put.stderr
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_solo_recovery_keeps_acknowledged_writes_and_refuses_old_members() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let survivor = 1;
    write_and_settle(&cluster, survivor).await?;
    lose(&mut cluster, &[2, 3])?;

    // Offline: refused while the member runs (its database is locked) ...
    let data_dir = cluster.member(survivor).data_dir();
    let data = data_dir.to_string_lossy().to_string();
    let running = raftkv(&["recover", "--solo", "--data-dir", &data])
        .await?
        .failed()?;
    ensure!(
        running.stderr.contains("running") && running.stderr.lines().count() == 1,
        "recover on a running member: {:?}",
        running.stderr
    );
    // ... and done once it is stopped.
    cluster.member_mut(survivor).stop().await?;
    let out = raftkv(&["recover", "--solo", "--data-dir", &data])
        .await?
        .ok()?;
    ensure!(
        out.stdout.contains("now epoch 1") && out.stdout.contains("kept:"),
        "recover printed {:?}",
        out.stdout
    );
    cluster.member_mut(survivor).restart()?;
    cluster.member_mut(survivor).wait_ready().await?;
    let endpoint = cluster.member(survivor).client_endpoint();
    assert_all_keys(&endpoint).await?;
    let st = member_status(&endpoint).await?;
    ensure!(
        field_u64(&st, "epoch")? == 1,
        "status after recovery: {st:?}"
    );
    ensure!(
        st.get("role").map(String::as_str) == Some("leader"),
        "{st:?}"
    );

    // Back to three with fresh members, learner first.
    add_fresh_member(&mut cluster, 4, &endpoint).await?;
    add_fresh_member(&mut cluster, 5, &endpoint).await?;
    let mut client = cluster.member(survivor).client().await?;
    let voters = client.member_list().await?;
    ensure!(
        voters.members().len() == 3 && voters.members().iter().all(|m| !m.is_learner()),
        "members after growing back: {:?}",
        voters.members()
    );
    client.put("rec/after", "grown", None).await?;
    for id in [4, 5] {
        let c = cluster.member(id).client().await?;
        wait::until(
            CONVERGE_TIMEOUT,
            format!("member {id} to see rec/after"),
            || {
                let mut c = c.clone();
                async move { get_value_serializable(&mut c, "rec/after").await }
            },
        )
        .await?;
        assert_all_keys(&cluster.member(id).client_endpoint()).await?;
    }

    // The old members come back with their old data: refused, fenced, harmless.
    let before = member_status(&endpoint).await?;
    assert_fenced(&mut cluster, &[2, 3]).await?;
    let log = std::fs::read_to_string(cluster.member(survivor).log_path())?;
    ensure!(
        log.contains("epoch mismatch"),
        "the survivor's log does not show the old members refused"
    );
    let after = member_status(&endpoint).await?;
    ensure!(
        after.get("leader") == before.get("leader") && after.get("term") == before.get("term"),
        "the old members disturbed the cluster: before {before:?}, after {after:?}"
    );
    client.put("rec/still", "writable", None).await?;
    ensure!(client.member_list().await?.members().len() == 3);

    // An old member is wiped with `raftkv reset`, which refuses it while it runs.
    let old_data = cluster.member(2).data_dir();
    let old = old_data.to_string_lossy().to_string();
    let refused = raftkv(&["reset", "--data-dir", &old]).await?.failed()?;
    ensure!(
        refused.stderr.contains("running") && refused.stderr.lines().count() == 1,
        "reset of a running member: {:?}",
        refused.stderr
    );
    cluster.member_mut(2).stop().await?;
    let reset = raftkv(&["reset", "--data-dir", &old]).await?.ok()?;
    ensure!(reset.stdout.contains("removed"), "{:?}", reset.stdout);
    ensure!(!old_data.join("db").exists(), "reset left the database");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn online_solo_recovery_through_the_admin_api() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let survivor = 2;
    write_and_settle(&cluster, survivor).await?;
    lose(&mut cluster, &[1, 3])?;
    let endpoint = cluster.member(survivor).client_endpoint();
    let pid = cluster.member(survivor).pid();
    // Refused until the member has been leaderless for long enough.
    let out = recover_once_leaderless(&endpoint, &[]).await?;
    ensure!(out.stdout.contains("now epoch 1"), "{:?}", out.stdout);
    // The member restarts itself in place (same pid) and serves alone.
    cluster.member_mut(survivor).wait_ready().await?;
    ensure!(cluster.member(survivor).pid() == pid);
    assert_all_keys(&endpoint).await?;
    let st = member_status(&endpoint).await?;
    ensure!(field_u64(&st, "epoch")? == 1, "{st:?}");
    let mut client = cluster.member(survivor).client().await?;
    client.put("rec/online", "ok", None).await?;
    ensure!(client.member_list().await?.members().len() == 1);
    assert_fenced(&mut cluster, &[1]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn recover_solo_is_refused_while_the_cluster_has_quorum() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.wait_leader().await?;
    let mut before = Vec::new();
    for m in cluster.members() {
        before.push(member_status(&m.client_endpoint()).await?);
    }
    for m in cluster.members() {
        let out = raftkv(&["recover", "--solo", "--endpoints", &m.client_endpoint()])
            .await?
            .failed()?;
        ensure!(
            out.stderr.contains("leads the cluster"),
            "member {}: {:?}",
            m.id,
            out.stderr
        );
    }
    ensure!(cluster.wait_leader().await? == leader);
    for (m, b) in cluster.members().iter().zip(&before) {
        let a = member_status(&m.client_endpoint()).await?;
        for field in ["epoch", "term", "leader", "cluster_id", "role"] {
            ensure!(
                a.get(field) == b.get(field),
                "member {} {field} changed: {b:?} -> {a:?}",
                m.id
            );
        }
    }
    let mut client = cluster.client().await?;
    ensure!(client.member_list().await?.members().len() == 3);
    client.put("still", "fine", None).await?;
    Ok(())
}

/// With auth on, RecoverSolo needs root, as every Admin change (issue 16,
/// item 1). No token can be issued without a quorum, so root's client
/// certificate (`--client-cert-auth`) is how the operator asks: another
/// user's certificate is refused, root's is accepted, and the recovered member
/// keeps every acknowledged write.
#[tokio::test(flavor = "multi_thread")]
async fn online_solo_recovery_with_auth_on_needs_roots_certificate() -> Result<()> {
    let mut cluster = ClusterOptions::new().tls().start(3).await?;
    let mut setup = cluster.client().await?;
    setup.user_add("root", "rootpw", None).await?;
    setup.user_grant_role("root", "root").await?;
    setup.user_add("alice", "alicepw", None).await?;
    setup.auth_enable().await?;
    let survivor = 2;
    write_and_settle(&cluster, survivor).await?;
    let tls = cluster.tls().context("a TLS cluster")?;
    let (root, alice) = (tls.root_client().clone(), tls.issue_client("alice")?);
    lose(&mut cluster, &[1, 3])?;
    let endpoint = cluster.member(survivor).client_url();
    let recover = |who: &raftkv_tests::tls::ClientTls| {
        let mut args: Vec<String> = ["recover", "--solo", "--endpoints", &endpoint]
            .map(String::from)
            .into();
        args.extend(["--min-leaderless-millis".into(), "2000".into()]);
        args.extend(who.etcdctl_flags());
        args
    };

    // Alice is refused, however long the member has been leaderless (a
    // refusal for being too early is retried; an acceptance ends the test).
    let deadline = std::time::Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let args = recover(&alice);
        let out = raftkv(&args.iter().map(String::as_str).collect::<Vec<_>>()).await?;
        ensure!(
            !out.success(),
            "alice recovered the member: {:?}",
            out.stdout
        );
        if out.stderr.contains("permission denied") {
            break;
        }
        ensure!(
            out.stderr.contains("no leader for") || out.stderr.contains("leads the cluster"),
            "unexpected refusal {:?}",
            out.stderr
        );
        ensure!(
            std::time::Instant::now() < deadline,
            "alice's RecoverSolo was never refused as hers: {:?}",
            out.stderr
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let out = recover_once_leaderless(&endpoint, &root.etcdctl_flags()).await?;
    ensure!(out.stdout.contains("now epoch 1"), "{:?}", out.stdout);
    cluster.member_mut(survivor).wait_ready().await?;
    let mut client = cluster.member(survivor).client().await?;
    for i in 0..KEYS {
        let key = format!("rec/{i:03}");
        let value = get_value(&mut client, &key).await?;
        ensure!(
            value.as_deref() == Some(format!("v{i}").as_str()),
            "{key} = {value:?}"
        );
    }
    Ok(())
}
