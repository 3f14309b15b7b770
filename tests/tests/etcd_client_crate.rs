//! The `etcd-client` crate against a 3-member cluster (through a follower): KV
//! round trips with prev_kv, range options, and etcd's revision semantics.
//! Transactions are in `etcd_client_txn.rs`.

use anyhow::{ensure, Context, Result};
use etcd_client::{DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp};
use raftkv_tests::kv::{get_value, kv_strings, revision};
use raftkv_tests::Cluster;

/// Keys of a response, as strings.
fn keys(kvs: &[etcd_client::KeyValue]) -> Result<Vec<String>> {
    kvs.iter().map(|kv| Ok(kv_strings(kv)?.0)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn put_get_delete_round_trips_with_prev_kv() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let mut c = cluster.follower().await?.client().await?;

    let put = c
        .put("rt/a", "1", Some(PutOptions::new().with_prev_key()))
        .await?;
    ensure!(
        put.prev_key().is_none(),
        "prev_kv of a new key: {:?}",
        put.prev_key()
    );
    let put = c
        .put("rt/a", "2", Some(PutOptions::new().with_prev_key()))
        .await?;
    let prev = put.prev_key().context("no prev_kv on overwrite")?;
    ensure!(
        kv_strings(prev)? == ("rt/a".into(), "1".into()),
        "prev_kv {prev:?}"
    );
    let put = c.put("rt/a", "3", None).await?;
    ensure!(
        put.prev_key().is_none(),
        "prev_kv returned without being asked for"
    );
    ensure!(get_value(&mut c, "rt/a").await?.as_deref() == Some("3"));

    // Binary keys and values survive untouched.
    let (bin_key, bin_value) = (vec![0u8, 0xff, b'k', 0x80], vec![0xffu8, 0, 0x7f, 0xc3]);
    c.put(bin_key.clone(), bin_value.clone(), None).await?;
    let got = c.get(bin_key.clone(), None).await?;
    ensure!(
        got.kvs().len() == 1 && got.kvs()[0].value() == bin_value,
        "binary round trip: {got:?}"
    );

    c.put("rt/b", "b", None).await?;
    let del = c
        .delete("rt/a", Some(DeleteOptions::new().with_prev_key()))
        .await?;
    ensure!(del.deleted() == 1, "deleted {}", del.deleted());
    let prevs: Vec<_> = del
        .prev_kvs()
        .iter()
        .map(kv_strings)
        .collect::<Result<_>>()?;
    ensure!(prevs == [("rt/a".into(), "3".into())], "prev_kvs {prevs:?}");
    ensure!(
        get_value(&mut c, "rt/a").await?.is_none(),
        "rt/a still there after delete"
    );

    let del = c
        .delete(
            "rt/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await?;
    ensure!(
        del.deleted() == 1 && keys(del.prev_kvs())? == ["rt/b"],
        "prefix delete: {del:?}"
    );
    let del = c.delete("rt/none", None).await?;
    ensure!(
        del.deleted() == 0,
        "deleting a missing key deleted {}",
        del.deleted()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn get_with_prefix_limit_sort_keys_only_count_only() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let mut c = cluster.follower().await?.client().await?;
    // Values sort in the opposite order to keys; creation order differs from both.
    for (k, v) in [
        ("r/c", "3"),
        ("r/a", "5"),
        ("r/e", "1"),
        ("r/b", "4"),
        ("r/d", "2"),
    ] {
        c.put(k, v, None).await?;
    }
    c.put("r0", "outside", None).await?;
    c.put("q", "outside", None).await?;

    let all = c.get("r/", Some(GetOptions::new().with_prefix())).await?;
    ensure!(
        keys(all.kvs())? == ["r/a", "r/b", "r/c", "r/d", "r/e"],
        "prefix: {all:?}"
    );
    ensure!(all.count() == 5 && !all.more(), "count/more: {all:?}");

    let limited = c
        .get("r/", Some(GetOptions::new().with_prefix().with_limit(2)))
        .await?;
    ensure!(
        keys(limited.kvs())? == ["r/a", "r/b"],
        "limit 2: {limited:?}"
    );
    ensure!(
        limited.count() == 5 && limited.more(),
        "limit keeps count 5, more=true: {limited:?}"
    );

    let opts = GetOptions::new().with_prefix();
    let by_value = c
        .get(
            "r/",
            Some(opts.clone().with_sort(SortTarget::Value, SortOrder::Ascend)),
        )
        .await?;
    ensure!(
        keys(by_value.kvs())? == ["r/e", "r/d", "r/c", "r/b", "r/a"],
        "by value: {by_value:?}"
    );
    let key_desc = c
        .get(
            "r/",
            Some(opts.clone().with_sort(SortTarget::Key, SortOrder::Descend)),
        )
        .await?;
    ensure!(
        keys(key_desc.kvs())? == ["r/e", "r/d", "r/c", "r/b", "r/a"],
        "key desc: {key_desc:?}"
    );
    let by_create = c
        .get(
            "r/",
            Some(
                opts.clone()
                    .with_sort(SortTarget::Create, SortOrder::Ascend),
            ),
        )
        .await?;
    ensure!(
        keys(by_create.kvs())? == ["r/c", "r/a", "r/e", "r/b", "r/d"],
        "by create: {by_create:?}"
    );
    let top = c
        .get(
            "r/",
            Some(
                opts.clone()
                    .with_sort(SortTarget::Value, SortOrder::Descend)
                    .with_limit(1),
            ),
        )
        .await?;
    ensure!(
        keys(top.kvs())? == ["r/a"],
        "max value with limit 1: {top:?}"
    );

    let keys_only = c.get("r/", Some(opts.clone().with_keys_only())).await?;
    ensure!(keys_only.kvs().len() == 5, "keys_only: {keys_only:?}");
    ensure!(
        keys_only.kvs().iter().all(|kv| kv.value().is_empty()),
        "keys_only returned values"
    );
    let count_only = c.get("r/", Some(opts.clone().with_count_only())).await?;
    ensure!(
        count_only.kvs().is_empty() && count_only.count() == 5,
        "count_only: {count_only:?}"
    );

    let range = c
        .get("r/b", Some(GetOptions::new().with_range("r/d")))
        .await?;
    ensure!(
        keys(range.kvs())? == ["r/b", "r/c"],
        "[r/b, r/d): {range:?}"
    );
    let from = c
        .get("r/d", Some(GetOptions::new().with_from_key()))
        .await?;
    ensure!(
        keys(from.kvs())? == ["r/d", "r/e", "r0"],
        "from r/d: {from:?}"
    );
    let everything = c
        .get(
            "",
            Some(GetOptions::new().with_all_keys().with_count_only()),
        )
        .await?;
    ensure!(everything.count() == 7, "all keys count: {everything:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn revisions_follow_etcd_semantics() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let mut c = cluster.follower().await?.client().await?;

    let r1 = revision(c.put("rev/k", "v1", None).await?.header())?;
    let kv = c.get("rev/k", None).await?;
    let k = &kv.kvs()[0];
    ensure!(
        (k.create_revision(), k.mod_revision(), k.version()) == (r1, r1, 1),
        "new key: {k:?}"
    );

    let r2 = revision(c.put("rev/k", "v2", None).await?.header())?;
    ensure!(r2 == r1 + 1, "overwrite got revision {r2} after {r1}");
    let kv = c.get("rev/k", None).await?;
    let k = &kv.kvs()[0];
    ensure!(
        (k.create_revision(), k.mod_revision(), k.version()) == (r1, r2, 2),
        "overwritten: {k:?}"
    );

    // Another key moves the store revision, not rev/k's.
    let r3 = revision(c.put("rev/other", "x", None).await?.header())?;
    ensure!(r3 == r2 + 1, "other key got revision {r3}");
    let kv = c.get("rev/k", None).await?;
    ensure!(
        kv.kvs()[0].mod_revision() == r2 && revision(kv.header())? == r3,
        "after other: {kv:?}"
    );

    let r4 = revision(c.delete("rev/k", None).await?.header())?;
    ensure!(r4 == r3 + 1, "delete got revision {r4}");
    // Deleting nothing does not make a revision.
    let noop = revision(c.delete("rev/k", None).await?.header())?;
    ensure!(
        noop == r4,
        "deleting a missing key moved the revision to {noop}"
    );

    let r5 = revision(c.put("rev/k", "v3", None).await?.header())?;
    let kv = c.get("rev/k", None).await?;
    let k = &kv.kvs()[0];
    ensure!(
        (k.create_revision(), k.mod_revision(), k.version()) == (r5, r5, 1),
        "recreated: {k:?}"
    );

    // History: each revision shows the key as it was then.
    let at = |rev| GetOptions::new().with_revision(rev);
    let v_at_r1 = c.get("rev/k", Some(at(r1))).await?;
    ensure!(
        v_at_r1.kvs()[0].value() == b"v1" && v_at_r1.kvs()[0].version() == 1,
        "at r1: {v_at_r1:?}"
    );
    let v_at_r3 = c.get("rev/k", Some(at(r3))).await?;
    ensure!(
        v_at_r3.kvs()[0].value() == b"v2" && v_at_r3.kvs()[0].version() == 2,
        "at r3: {v_at_r3:?}"
    );
    let v_at_r4 = c.get("rev/k", Some(at(r4))).await?;
    ensure!(v_at_r4.kvs().is_empty(), "at r4 (deleted): {v_at_r4:?}");

    // One txn is one revision, shared by all its writes.
    let txn = Txn::new().and_then([
        TxnOp::put("rev/t1", "a", None),
        TxnOp::put("rev/t2", "b", None),
    ]);
    let r6 = revision(c.txn(txn).await?.header())?;
    ensure!(r6 == r5 + 1, "txn got revision {r6} after {r5}");
    let both = c
        .get("rev/t", Some(GetOptions::new().with_prefix()))
        .await?;
    ensure!(
        both.kvs().iter().all(|kv| kv.mod_revision() == r6),
        "txn writes: {both:?}"
    );
    Ok(())
}
