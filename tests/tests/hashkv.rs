//! HashKV as a consistency check: after a randomized workload of puts, deletes,
//! txns and compactions sent to different members, every member reports the same
//! hash at the same revision.

use anyhow::{ensure, Context, Result};
use etcd_client::{Compare, CompareOp, DeleteOptions, Txn, TxnOp};
use raftkv_tests::wait::{self, CONVERGE_TIMEOUT};
use raftkv_tests::ClusterOptions;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[tokio::test(flavor = "multi_thread")]
async fn hashkv_is_equal_on_all_members_after_a_random_workload() -> Result<()> {
    let seed: u64 = std::env::var("RAFTKV_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("hashkv workload seed {seed} (RAFTKV_TEST_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let cluster = ClusterOptions::new().start(3).await?;
    let ids = cluster.live_ids();
    let mut clients = Vec::new();
    for id in &ids {
        clients.push(cluster.member(*id).client().await?);
    }
    let mut last_rev = 0;
    for step in 0..400 {
        let pick = rng.random_range(0..clients.len());
        let c = &mut clients[pick];
        let key = format!("h/{}", rng.random_range(0..40));
        let rev = match rng.random_range(0..10) {
            0..=4 => c
                .put(key, format!("v{step}"), None)
                .await?
                .header()
                .map(|h| h.revision()),
            5 => c
                .delete(key, Some(DeleteOptions::new()))
                .await?
                .header()
                .map(|h| h.revision()),
            6 => c
                .delete("h/1", Some(DeleteOptions::new().with_prefix()))
                .await?
                .header()
                .map(|h| h.revision()),
            7 | 8 => {
                let txn = Txn::new()
                    .when([Compare::version(key.clone(), CompareOp::Greater, 1)])
                    .and_then([
                        TxnOp::put(key.clone(), "txn", None),
                        TxnOp::put(format!("{key}/t"), "t", None),
                    ])
                    .or_else([TxnOp::delete(key, None)]);
                c.txn(txn).await?.header().map(|h| h.revision())
            }
            _ if last_rev > 10 => {
                let target = rng.random_range(last_rev - 10..=last_rev);
                // An already compacted revision is refused; that is fine here.
                let _ = c.compact(target, None).await;
                None
            }
            _ => None,
        };
        last_rev = last_rev.max(rev.unwrap_or(0));
    }
    // Wait until every member applied everything, then compare.
    let current = clients[0]
        .get("h/", None)
        .await?
        .header()
        .context("no header")?
        .revision();
    let hashes = wait::until(
        CONVERGE_TIMEOUT,
        "every member to report the same HashKV",
        || {
            let mut clients = clients.clone();
            async move {
                let mut hashes = Vec::new();
                for c in clients.iter_mut() {
                    hashes.push(c.hash_kv(current).await?.hash());
                }
                Ok(hashes.iter().all(|h| *h == hashes[0]).then_some(hashes))
            }
        },
    )
    .await?;
    ensure!(hashes[0] != 0, "hash is 0");
    // A different state has a different hash (the check can fail).
    clients[0].put("h/extra", "x", None).await?;
    let newer = clients[0]
        .get("h/", None)
        .await?
        .header()
        .context("no header")?
        .revision();
    let changed = clients[0].hash_kv(newer).await?.hash();
    ensure!(changed != hashes[0], "hash did not change after a write");
    Ok(())
}
