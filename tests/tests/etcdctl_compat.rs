//! The real etcdctl (Debian's `etcd-client` package, v3 API) against a 3-member
//! raftkv cluster. Expected outputs are what etcdctl prints for etcd; they were
//! checked against a real etcd (3.4, Debian's) with the same commands.

use anyhow::{ensure, Context, Result};
use raftkv_tests::{Cluster, CmdOutput, Etcdctl};
use serde_json::Value;
use std::collections::BTreeSet;

/// Run etcdctl, require success, return stdout.
async fn ok(ctl: &Etcdctl, args: &[&str]) -> Result<String> {
    Ok(ctl.run(args).await?.ok()?.stdout)
}

/// Run etcdctl with `-w json` appended, require success, parse stdout.
async fn json(ctl: &Etcdctl, args: &[&str]) -> Result<Value> {
    let mut args = args.to_vec();
    args.extend(["-w", "json"]);
    let out = ok(ctl, &args).await?;
    serde_json::from_str(&out).with_context(|| format!("etcdctl {args:?} printed non-JSON: {out}"))
}

fn u64_at(v: &Value, pointer: &str) -> Result<u64> {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .with_context(|| format!("no unsigned integer at {pointer} in {v}"))
}

fn i64_at(v: &Value, pointer: &str) -> Result<i64> {
    v.pointer(pointer)
        .and_then(Value::as_i64)
        .with_context(|| format!("no integer at {pointer} in {v}"))
}

/// The last non-empty stderr line: etcdctl 3.4 may log client retries above it.
fn last_error_line(out: &CmdOutput) -> &str {
    out.stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn put_get_del_compaction_print_what_etcdctl_prints() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let ctl = Etcdctl::new(&cluster.endpoints())?;

    ensure!(ok(&ctl, &["put", "ctl/k", "v1"]).await? == "OK\n");
    let first = json(&ctl, &["get", "ctl/k"]).await?;
    let r1 = i64_at(&first, "/kvs/0/mod_revision")?;
    ensure!(ok(&ctl, &["put", "ctl/k", "v2"]).await? == "OK\n");

    let plain = ok(&ctl, &["get", "ctl/k"]).await?;
    ensure!(plain == "ctl/k\nv2\n", "get printed {plain:?}");
    let old = ok(&ctl, &["get", "ctl/k", &format!("--rev={r1}")]).await?;
    ensure!(old == "ctl/k\nv1\n", "get --rev={r1} printed {old:?}");

    // -w json: the RangeResponse as etcd's JSON, keys and values base64.
    let got = json(&ctl, &["get", "ctl/k"]).await?;
    let r2 = r1 + 1;
    ensure!(i64_at(&got, "/count")? == 1, "count in {got}");
    ensure!(
        i64_at(&got, "/header/revision")? == r2,
        "header revision in {got}"
    );
    ensure!(
        u64_at(&got, "/header/member_id")? != 0,
        "member_id in {got}"
    );
    ensure!(u64_at(&got, "/header/raft_term")? > 0, "raft_term in {got}");
    ensure!(
        got.pointer("/kvs/0/key") == Some(&Value::from("Y3RsL2s=")),
        "key in {got}"
    ); // "ctl/k"
    ensure!(
        got.pointer("/kvs/0/value") == Some(&Value::from("djI=")),
        "value in {got}"
    ); // "v2"
    ensure!(
        i64_at(&got, "/kvs/0/create_revision")? == r1,
        "create_revision in {got}"
    );
    ensure!(
        i64_at(&got, "/kvs/0/mod_revision")? == r2,
        "mod_revision in {got}"
    );
    ensure!(i64_at(&got, "/kvs/0/version")? == 2, "version in {got}");

    ok(&ctl, &["put", "ctl/p/a", "1"]).await?;
    ok(&ctl, &["put", "ctl/p/b", "2"]).await?;
    ok(&ctl, &["put", "ctl/q", "3"]).await?;
    let prefix = ok(&ctl, &["get", "--prefix", "ctl/p/"]).await?;
    ensure!(
        prefix == "ctl/p/a\n1\nctl/p/b\n2\n",
        "get --prefix printed {prefix:?}"
    );

    // del prints the number of keys deleted.
    ensure!(ok(&ctl, &["del", "ctl/nothing"]).await? == "0\n");
    ensure!(ok(&ctl, &["del", "--prefix", "ctl/p/"]).await? == "2\n");
    ensure!(ok(&ctl, &["get", "--prefix", "ctl/p/"]).await?.is_empty());

    // Compaction at r2: reads below it fail, reads at it still work.
    let compacted = ok(&ctl, &["compaction", &r2.to_string()]).await?;
    ensure!(
        compacted == format!("compacted revision {r2}\n"),
        "compaction printed {compacted:?}"
    );
    let below = ctl
        .run(&["get", "ctl/k", &format!("--rev={r1}")])
        .await?
        .failed()?;
    ensure!(
        last_error_line(&below) == "Error: etcdserver: mvcc: required revision has been compacted",
        "get below the compacted revision: {below}"
    );
    let at = ok(&ctl, &["get", "ctl/k", &format!("--rev={r2}")]).await?;
    ensure!(
        at == "ctl/k\nv2\n",
        "get --rev={r2} (the compacted revision) printed {at:?}"
    );

    ensure!(ok(&ctl, &["del", "ctl/k"]).await? == "1\n");
    ensure!(ok(&ctl, &["get", "ctl/k"]).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_from_stdin_runs_the_success_or_the_failure_branch() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let ctl = Etcdctl::new(&cluster.endpoints())?;
    ok(&ctl, &["put", "ctl/t", "v1"]).await?;

    // Non-interactive txn: compares, blank line, success ops, blank line, failure ops.
    let swap = "value(\"ctl/t\") = \"v1\"\n\nput ctl/t v2\n\nput ctl/t failed\nget ctl/t\n\n";
    let first = ctl.run_with_stdin(&["txn"], swap).await?.ok()?;
    ensure!(
        first.stdout == "SUCCESS\n\nOK\n",
        "txn (compare true) printed {:?}",
        first.stdout
    );
    ensure!(ok(&ctl, &["get", "ctl/t"]).await? == "ctl/t\nv2\n");

    let second = ctl.run_with_stdin(&["txn"], swap).await?.ok()?;
    ensure!(
        second.stdout == "FAILURE\n\nOK\n\nctl/t\nfailed\n",
        "txn (compare false) printed {:?}",
        second.stdout
    );
    ensure!(ok(&ctl, &["get", "ctl/t"]).await? == "ctl/t\nfailed\n");

    // Compares on version and mod revision: three puts so far.
    let by_version =
        "ver(\"ctl/t\") = \"3\"\nmod(\"ctl/t\") > \"0\"\n\nget ctl/t\n\nput ctl/t wrong\n\n";
    let third = ctl.run_with_stdin(&["txn"], by_version).await?.ok()?;
    ensure!(
        third.stdout == "SUCCESS\n\nctl/t\nfailed\n",
        "txn on ver/mod printed {:?}",
        third.stdout
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn member_list_and_endpoint_status_print_what_etcdctl_prints() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.wait_leader_all().await?;
    let ctl = Etcdctl::new(&cluster.endpoints())?;

    // "ID(hex), started, NAME, PEER URLS, CLIENT URLS, IS LEARNER"
    let listed: BTreeSet<String> = ok(&ctl, &["member", "list"])
        .await?
        .lines()
        .map(str::to_string)
        .collect();
    let expected: BTreeSet<String> = cluster
        .members()
        .iter()
        .map(|m| {
            format!(
                "{:x}, started, {}, {}, {}, false",
                m.id,
                m.name,
                m.peer_url(),
                m.client_url()
            )
        })
        .collect();
    ensure!(
        listed == expected,
        "member list printed {listed:#?}, expected {expected:#?}"
    );

    let list = json(&ctl, &["member", "list"]).await?;
    let ids: BTreeSet<u64> = list
        .pointer("/members")
        .and_then(Value::as_array)
        .context("no members array")?
        .iter()
        .filter_map(|m| m.get("ID").and_then(Value::as_u64))
        .collect();
    ensure!(
        ids == BTreeSet::from([1, 2, 3]),
        "member list -w json ids {ids:?} in {list}"
    );

    let statuses = json(&ctl, &["endpoint", "status"]).await?;
    let statuses = statuses
        .as_array()
        .context("endpoint status -w json is not an array")?;
    ensure!(statuses.len() == 3, "{} endpoint statuses", statuses.len());
    for m in cluster.members() {
        let st = statuses
            .iter()
            .find(|s| s.get("Endpoint") == Some(&Value::from(m.client_endpoint())))
            .with_context(|| format!("no status for {} in {statuses:?}", m.client_endpoint()))?;
        ensure!(
            u64_at(st, "/Status/header/member_id")? == m.id,
            "member_id of {}: {st}",
            m.name
        );
        ensure!(
            u64_at(st, "/Status/leader")? == leader,
            "leader seen by {}: {st}",
            m.name
        );
        ensure!(
            u64_at(st, "/Status/raftTerm")? > 0,
            "raftTerm of {}: {st}",
            m.name
        );
        ensure!(
            u64_at(st, "/Status/raftIndex")? > 0,
            "raftIndex of {}: {st}",
            m.name
        );
        let version = st
            .pointer("/Status/version")
            .and_then(Value::as_str)
            .unwrap_or_default();
        ensure!(
            !version.is_empty(),
            "no version in the status of {}: {st}",
            m.name
        );
    }
    Ok(())
}
