//! The `raftkv` client subcommands against a lone member started without
//! `--initial-cluster` or `--join` (which the interface defines as a one-member
//! cluster). Results are cross-checked through the etcd-client crate, so a CLI
//! that prints the right thing but does the wrong thing fails too.

use anyhow::{ensure, Context, Result};
use raftkv_tests::kv::{get_value, revision};
use raftkv_tests::{ClusterOptions, Ports, RaftkvCli};

/// The stdout lines of a table that mention `needle`.
fn lines_with<'a>(stdout: &'a str, needle: &str) -> Vec<&'a str> {
    stdout.lines().filter(|l| l.contains(needle)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn put_get_del_against_a_lone_member() -> Result<()> {
    let mut cluster = ClusterOptions::new()
        .without_initial_cluster()
        .start(1)
        .await?;
    ensure!(
        cluster.wait_leader().await? == 1,
        "a lone member with --id 1 is not its own leader"
    );
    let cli = RaftkvCli::new(&cluster.endpoints())?;
    let mut c = cluster.client().await?;

    cli.run(&["put", "cli/k", "v1"]).await?.ok()?;
    ensure!(
        get_value(&mut c, "cli/k").await?.as_deref() == Some("v1"),
        "put v1 not stored"
    );
    let r1 = revision(c.get("cli/k", None).await?.header())?;
    cli.run(&["put", "cli/k", "v2"]).await?.ok()?;

    // get prints KEY\nVALUE lines like etcdctl.
    let got = cli.run(&["get", "cli/k"]).await?.ok()?.stdout;
    ensure!(got == "cli/k\nv2\n", "get printed {got:?}");
    let old = cli
        .run(&["get", "cli/k", "--rev", &r1.to_string()])
        .await?
        .ok()?
        .stdout;
    ensure!(old == "cli/k\nv1\n", "get --rev {r1} printed {old:?}");
    let missing = cli.run(&["get", "cli/missing"]).await?.ok()?.stdout;
    ensure!(
        missing.is_empty(),
        "get of a missing key printed {missing:?}"
    );

    cli.run(&["put", "cli/p/a", "1"]).await?.ok()?;
    cli.run(&["put", "cli/p/b", "2"]).await?.ok()?;
    cli.run(&["put", "cli/q", "3"]).await?.ok()?;
    let prefix = cli.run(&["get", "cli/p/", "--prefix"]).await?.ok()?.stdout;
    ensure!(
        prefix == "cli/p/a\n1\ncli/p/b\n2\n",
        "get --prefix printed {prefix:?}"
    );

    // del prints the number deleted.
    let del = cli.run(&["del", "cli/k"]).await?.ok()?.stdout;
    ensure!(del.trim() == "1", "del printed {del:?}");
    ensure!(
        get_value(&mut c, "cli/k").await?.is_none(),
        "cli/k survived del"
    );
    let del = cli.run(&["del", "cli/p/", "--prefix"]).await?.ok()?.stdout;
    ensure!(del.trim() == "2", "del --prefix printed {del:?}");
    let del = cli.run(&["del", "cli/none"]).await?.ok()?.stdout;
    ensure!(del.trim() == "0", "del of a missing key printed {del:?}");
    ensure!(
        get_value(&mut c, "cli/q").await?.as_deref() == Some("3"),
        "del --prefix cli/p/ hit cli/q"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn member_and_status_subcommands_against_a_lone_member() -> Result<()> {
    let cluster = ClusterOptions::new()
        .without_initial_cluster()
        .start(1)
        .await?;
    let m1 = &cluster.members()[0];
    let cli = RaftkvCli::new(&cluster.endpoints())?;
    let mut c = cluster.client().await?;

    // member list: a row for m1 with its peer and client URLs.
    let list = cli.run(&["member", "list"]).await?.ok()?.stdout;
    let rows = lines_with(&list, &m1.peer_url());
    ensure!(
        rows.len() == 1,
        "member list has {} rows with m1's peer URL:\n{list}",
        rows.len()
    );
    ensure!(
        rows[0].contains(&m1.name) && rows[0].contains(&m1.client_url()),
        "m1's row lacks its name or client URL: {:?}",
        rows[0]
    );

    // status: m1's row says it is the leader.
    let status = cli.run(&["status"]).await?.ok()?.stdout;
    let rows = lines_with(&status, &m1.name);
    ensure!(
        rows.len() == 1,
        "status has {} rows mentioning {}:\n{status}",
        rows.len(),
        m1.name
    );
    ensure!(
        rows[0].to_lowercase().contains("leader"),
        "m1's status row does not say leader: {:?}",
        rows[0]
    );

    // member add --learner prints the new id.
    let nowhere = Ports::allocate()?;
    let added = cli
        .run(&[
            "member",
            "add",
            "extra",
            "--peer-urls",
            &nowhere.peer_url(),
            "--learner",
        ])
        .await?
        .ok()?
        .stdout;
    let api_list = c.member_list().await?;
    let learner = api_list
        .members()
        .iter()
        .find(|m| m.peer_urls() == [nowhere.peer_url()])
        .with_context(|| {
            format!("member add printed {added:?} but MemberList has no such member")
        })?;
    ensure!(
        learner.is_learner(),
        "member add --learner added a voter: {learner:?}"
    );
    // The id as the CLI printed it (hex like etcdctl, or decimal): the CLI must take
    // back what it prints.
    let printed = added
        .split(|ch: char| !ch.is_ascii_alphanumeric())
        .find(|tok| *tok == format!("{:x}", learner.id()) || *tok == learner.id().to_string())
        .with_context(|| {
            format!(
                "member add printed {added:?}, not the new id {}",
                learner.id()
            )
        })?
        .to_string();

    let list = cli.run(&["member", "list"]).await?.ok()?.stdout;
    ensure!(
        list.contains(&nowhere.peer_url()),
        "member list lacks the learner:\n{list}"
    );

    // Nothing runs at the learner's URL, so it can never be in sync.
    let promote = cli.run(&["member", "promote", &printed]).await?.failed()?;
    ensure!(
        promote
            .stderr
            .contains("can only promote a learner member which is in sync with leader"),
        "member promote of a lagging learner: {promote}"
    );

    cli.run(&["member", "remove", &printed]).await?.ok()?;
    let api_list = c.member_list().await?;
    ensure!(
        api_list.members().len() == 1 && api_list.members()[0].id() == m1.id,
        "after member remove: {:?}",
        api_list.members()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_and_watch_subcommands_against_a_lone_member() -> Result<()> {
    let cluster = ClusterOptions::new().start(1).await?;
    let cli = RaftkvCli::new(&cluster.endpoints())?;
    let mut c = cluster.client().await?;

    let grant = cli.run(&["lease", "grant", "60"]).await?.ok()?.stdout;
    ensure!(
        grant.trim().ends_with("granted with TTL(60s)"),
        "grant printed {grant:?}"
    );
    let id = grant
        .split_whitespace()
        .nth(1)
        .context("no id")?
        .to_string();
    cli.run(&["put", "cli/leased", "v", "--lease", &id])
        .await?
        .ok()?;
    let kv = c.get("cli/leased", None).await?.kvs()[0].clone();
    ensure!(
        format!("{:x}", kv.lease()) == id,
        "put --lease attached {:x}, not {id}",
        kv.lease()
    );
    let ttl = cli
        .run(&["lease", "ttl", &id, "--keys"])
        .await?
        .ok()?
        .stdout;
    ensure!(
        ttl.contains("attached keys([cli/leased])"),
        "ttl printed {ttl:?}"
    );
    let ka = cli
        .run(&["lease", "keep-alive", &id, "--once"])
        .await?
        .ok()?
        .stdout;
    ensure!(
        ka.trim() == format!("lease {id} keepalived with TTL(60)"),
        "keep-alive printed {ka:?}"
    );
    cli.run(&["lease", "revoke", &id]).await?.ok()?;
    ensure!(
        get_value(&mut c, "cli/leased").await?.is_none(),
        "revoke left the key"
    );
    let bad = cli.run(&["lease", "revoke", "zz"]).await?.failed()?;
    ensure!(
        bad.stderr.contains("not hexadecimal"),
        "bad id stderr {:?}",
        bad.stderr
    );

    // watch --rev replays history; stop it once it printed what we expect.
    let rev = revision(c.put("cli/w", "1", None).await?.header())?;
    c.put("cli/w", "2", None).await?;
    let mut child = tokio::process::Command::new(raftkv_tests::binaries::raftkv_bin()?)
        .args([
            "watch",
            "cli/w",
            "--rev",
            &rev.to_string(),
            "--endpoints",
            &cluster.endpoints()[0],
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut got = Vec::new();
    while got.len() < 6 {
        let line = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
            .await
            .with_context(|| format!("raftkv watch printed only {got:?}"))??
            .context("raftkv watch exited")?;
        got.push(line);
    }
    child.kill().await.ok();
    ensure!(
        got == ["PUT", "cli/w", "1", "PUT", "cli/w", "2"],
        "raftkv watch printed {got:?}"
    );
    Ok(())
}
