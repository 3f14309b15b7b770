//! Lock (v3lock) and Election (v3election) through the etcd-client crate, and
//! `etcdctl lock`: mutual exclusion, hand-over on unlock and on lease expiry,
//! leadership with proclaim, observe and resign.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcd_client::{LockOptions, ProclaimOptions, ResignOptions};
use raftkv_tests::etcdctl::Etcdctl;
use raftkv_tests::grpc::grpc_status;
use raftkv_tests::ClusterOptions;

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_has_one_holder_and_passes_on_unlock_and_on_lease_expiry() -> Result<()> {
    let cluster = ClusterOptions::new().start(3).await?;
    let mut a = cluster.client().await?;
    let lease_a = a.lease_grant(60, None).await?.id();
    let key_a = a
        .lock("L", Some(LockOptions::new().with_lease(lease_a)))
        .await?
        .key()
        .to_vec();
    ensure!(key_a.starts_with(b"L/"), "lock key {key_a:?}");

    let mut b = cluster.client().await?;
    let lease_b = b.lease_grant(60, None).await?.id();
    let waiter = tokio::spawn(async move {
        b.lock("L", Some(LockOptions::new().with_lease(lease_b)))
            .await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(
        !waiter.is_finished(),
        "a second holder got the lock while the first held it"
    );
    a.unlock(key_a).await?;
    let key_b = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .context("the waiter did not get the lock after unlock")???
        .key()
        .to_vec();

    // A holder that dies lets go when its lease expires.
    let mut c = cluster.client().await?;
    let lease_c = c.lease_grant(60, None).await?.id();
    let waiter = tokio::spawn(async move {
        c.lock("L", Some(LockOptions::new().with_lease(lease_c)))
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(!waiter.is_finished(), "two holders at once");
    let mut admin = cluster.client().await?;
    admin.lease_revoke(lease_b).await?; // as if b's lease had expired
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .context("the waiter did not get the lock after the holder's lease ended")???;
    ensure!(
        admin.get(key_b, None).await?.kvs().is_empty(),
        "the expired holder's key remains"
    );

    // etcdctl lock runs a command while holding the lock, then releases it.
    let ctl = Etcdctl::new(&cluster.endpoints())?;
    let out = ctl.run(&["lock", "other", "echo", "held"]).await?.ok()?;
    ensure!(
        out.stdout.trim() == "held",
        "etcdctl lock printed {:?}",
        out.stdout
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn election_campaign_proclaim_observe_resign() -> Result<()> {
    let cluster = ClusterOptions::new().start(3).await?;
    let mut a = cluster.client().await?;
    let lease_a = a.lease_grant(60, None).await?.id();
    let won = a.campaign("E", "alice", lease_a).await?;
    let leader = won
        .leader()
        .context("campaign returned no leader key")?
        .clone();
    let now = a.leader("E").await?;
    ensure!(
        now.kv().map(|kv| kv.value()) == Some(&b"alice"[..]),
        "leader is {:?}",
        now.kv()
    );

    let mut observer = cluster.client().await?;
    let mut seen = observer.observe("E").await?;
    let first = seen.message().await?.context("observe ended")?;
    ensure!(
        first.kv().map(|kv| kv.value()) == Some(&b"alice"[..]),
        "observe began with {:?}",
        first.kv()
    );

    let mut b = cluster.client().await?;
    let lease_b = b.lease_grant(60, None).await?.id();
    let challenger = tokio::spawn(async move {
        let won = b.campaign("E", "bob", lease_b).await?;
        anyhow::Ok(won.leader().cloned())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(!challenger.is_finished(), "two leaders at once");

    a.proclaim(
        "alice-2",
        Some(ProclaimOptions::new().with_leader(leader.clone())),
    )
    .await?;
    let next = seen.message().await?.context("observe ended")?;
    ensure!(
        next.kv().map(|kv| kv.value()) == Some(&b"alice-2"[..]),
        "observe saw {:?}",
        next.kv()
    );

    a.resign(Some(ResignOptions::new().with_leader(leader.clone())))
        .await?;
    tokio::time::timeout(Duration::from_secs(10), challenger)
        .await
        .context("bob did not become leader after alice resigned")???;
    let after = seen.message().await?.context("observe ended")?;
    ensure!(
        after.kv().map(|kv| kv.value()) == Some(&b"bob"[..]),
        "observe saw {:?}",
        after.kv()
    );

    let err = a
        .proclaim("stale", Some(ProclaimOptions::new().with_leader(leader)))
        .await
        .expect_err("a resigned leader proclaimed");
    let status = grpc_status(&err).context("no gRPC status")?;
    ensure!(
        status.message() == "election: not leader",
        "stale proclaim: {status:?}"
    );
    Ok(())
}
