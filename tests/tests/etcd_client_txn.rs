//! Transactions through the `etcd-client` crate against a 3-member cluster
//! (through a follower): compare-and-swap on every compare target with both
//! branches, and a nested txn with etcd's compare semantics.

use anyhow::{bail, ensure, Result};
use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse, TxnResponse};
use raftkv_tests::kv::{get_value, kv_strings, revision};
use raftkv_tests::Cluster;

/// The kvs of the `index`th op response of a txn, which must be a range.
fn txn_get(resp: &TxnResponse, index: usize) -> Result<Vec<(String, String)>> {
    match resp.op_responses().get(index) {
        Some(TxnOpResponse::Get(get)) => get.kvs().iter().map(kv_strings).collect(),
        other => bail!("txn response {index} is not a range response: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_compare_and_swap_on_every_target_and_nested() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let mut c = cluster.follower().await?.client().await?;

    // Create-if-absent: a missing key has create_revision 0.
    let create = || {
        Txn::new()
            .when([Compare::create_revision("cas/k", CompareOp::Equal, 0)])
            .and_then([TxnOp::put("cas/k", "v1", None)])
            .or_else([TxnOp::get("cas/k", None)])
    };
    let first = c.txn(create()).await?;
    ensure!(
        first.succeeded(),
        "create-if-absent on a missing key failed"
    );
    let created = revision(first.header())?;
    let again = c.txn(create()).await?;
    ensure!(
        !again.succeeded(),
        "create-if-absent succeeded on an existing key"
    );
    ensure!(
        txn_get(&again, 0)? == [("cas/k".into(), "v1".into())],
        "failure branch get"
    );

    // (compare, expected outcome) on value, version, create_revision, mod_revision.
    let cases = [
        (Compare::value("cas/k", CompareOp::Equal, "v1"), true),
        (Compare::value("cas/k", CompareOp::Equal, "nope"), false),
        (Compare::value("cas/k", CompareOp::Greater, "v0"), true),
        (Compare::value("cas/k", CompareOp::NotEqual, "v1"), false),
        (Compare::version("cas/k", CompareOp::Equal, 1), true),
        (Compare::version("cas/k", CompareOp::Greater, 1), false),
        (
            Compare::create_revision("cas/k", CompareOp::Equal, created),
            true,
        ),
        (
            Compare::create_revision("cas/k", CompareOp::Less, created),
            false,
        ),
        (
            Compare::mod_revision("cas/k", CompareOp::Equal, created),
            true,
        ),
        (
            Compare::mod_revision("cas/k", CompareOp::Greater, created),
            false,
        ),
    ];
    for (compare, expect_success) in cases {
        let described = format!("{compare:?}");
        let resp = c
            .txn(
                Txn::new()
                    .when([compare])
                    .and_then([TxnOp::get("cas/k", None)])
                    .or_else([TxnOp::get("cas/none", None)]),
            )
            .await?;
        ensure!(
            resp.succeeded() == expect_success,
            "{described}: succeeded={}",
            resp.succeeded()
        );
        let branch_keys = txn_get(&resp, 0)?;
        ensure!(
            branch_keys.is_empty() != expect_success,
            "{described} ran the wrong branch: {branch_keys:?}"
        );
    }

    // A real swap: only the writer that read the current mod_revision wins.
    let swap = |from: i64, to: &str| {
        Txn::new()
            .when([Compare::mod_revision("cas/k", CompareOp::Equal, from)])
            .and_then([TxnOp::put("cas/k", to, None)])
    };
    ensure!(
        c.txn(swap(created, "v2")).await?.succeeded(),
        "swap from the current revision failed"
    );
    ensure!(
        !c.txn(swap(created, "v3")).await?.succeeded(),
        "stale swap succeeded"
    );
    ensure!(get_value(&mut c, "cas/k").await?.as_deref() == Some("v2"));

    // Nested txn. etcd evaluates every compare of the whole txn tree against the
    // store as it was before the txn, so the inner compare sees cas/flag = "on" even
    // though the outer branch overwrites it first.
    c.put("cas/flag", "on", None).await?;
    let inner = Txn::new()
        .when([Compare::value("cas/flag", CompareOp::Equal, "on")])
        .and_then([TxnOp::put("cas/inner", "yes", None)])
        .or_else([TxnOp::put("cas/inner", "no", None)]);
    let outer = Txn::new()
        .when([Compare::version("cas/k", CompareOp::Equal, 2)])
        .and_then([TxnOp::put("cas/flag", "off", None), TxnOp::txn(inner)])
        .or_else([TxnOp::put("cas/outer", "failed", None)]);
    let resp = c.txn(outer).await?;
    ensure!(resp.succeeded(), "outer compare (version 2) failed");
    match resp.op_responses().get(1) {
        Some(TxnOpResponse::Txn(inner)) => {
            ensure!(inner.succeeded(), "inner txn took the failure branch")
        }
        other => bail!("second op response is not a txn: {other:?}"),
    }
    ensure!(get_value(&mut c, "cas/inner").await?.as_deref() == Some("yes"));
    ensure!(get_value(&mut c, "cas/flag").await?.as_deref() == Some("off"));
    ensure!(
        get_value(&mut c, "cas/outer").await?.is_none(),
        "outer failure branch ran too"
    );
    Ok(())
}
