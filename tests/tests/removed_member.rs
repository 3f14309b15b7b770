//! A removed member stops, as etcd's do, and will not start again with its
//! data dir (issue 17, finding 6): it learns of its removal by applying the
//! membership without itself, or, when the leader stopped replicating to it
//! before it saw that entry, from a peer that refuses it as no longer a
//! member.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcd_client::Client;
use raftkv_tests::kv::get_value;
use raftkv_tests::{Cluster, ClusterOptions};

/// How long a removed member may take to notice and stop: a few election
/// timeouts (it must first miss its leader and ask a peer).
const STOP_WITHIN: Duration = Duration::from_secs(20);

/// Wait for `id` to exit on its own; its exit status must be a failure and
/// its log must say why.
async fn stops_by_itself(cluster: &mut Cluster, id: u64) -> Result<String> {
    let member = cluster.member_mut(id);
    let deadline = tokio::time::Instant::now() + STOP_WITHIN;
    while member.is_running() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "removed member {id:x} still runs {STOP_WITHIN:?} after its removal; log tail:\n{}",
            member.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = member.last_exit().context("no exit status")?;
    let log = member.log_tail(40);
    ensure!(
        status.code() == Some(3) && log.contains("was removed from the cluster"),
        "removed member {id:x} exited with {status}, not 3 (removed), or without saying \
         it was removed:\n{log}"
    );
    // Stopped for good: the harness must not count it as a crash.
    member.kill9()?;
    Ok(log)
}

/// Start `id` again: it must refuse at once, saying what to do instead.
async fn refuses_to_start_again(cluster: &mut Cluster, id: u64) -> Result<()> {
    let member = cluster.member_mut(id);
    member.restart()?;
    let status = member.wait_exit(Duration::from_secs(20)).await?;
    let log = member.log_tail(20);
    ensure!(
        status.code() == Some(3) && log.contains("raftkv reset") && log.contains("MemberAdd"),
        "a removed member's data dir started again ({status}):\n{log}"
    );
    member.kill9()?;
    Ok(())
}

/// A client of every member but `id`.
async fn client_of_others(cluster: &Cluster, id: u64) -> Result<Client> {
    let others: Vec<String> = cluster
        .members()
        .iter()
        .filter(|m| m.id != id)
        .map(|m| m.client_endpoint())
        .collect();
    Ok(Client::connect(&others, None).await?)
}

async fn still_writes(client: &mut Client, key: &str) -> Result<()> {
    client.put(key, "ok", None).await?;
    let got = get_value(client, key).await?;
    ensure!(got.as_deref() == Some("ok"), "read back {got:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_member_stops_and_will_not_start_again() -> Result<()> {
    let mut cluster = ClusterOptions::new().start(3).await?;
    let follower = cluster.follower().await?.id;
    let mut client = client_of_others(&cluster, follower).await?;
    client
        .member_remove(follower)
        .await
        .context("MemberRemove")?;
    stops_by_itself(&mut cluster, follower).await?;
    refuses_to_start_again(&mut cluster, follower).await?;
    still_writes(&mut client, "after-removal").await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_removed_while_paused_learns_it_from_its_peers() -> Result<()> {
    let mut cluster = ClusterOptions::new().start(3).await?;
    let follower = cluster.follower().await?.id;
    let mut client = client_of_others(&cluster, follower).await?;
    // Frozen through its whole removal: it never sees the entries that
    // remove it, and the leader stops replicating to it afterwards.
    cluster.member_mut(follower).pause()?;
    client
        .member_remove(follower)
        .await
        .context("MemberRemove")?;
    still_writes(&mut client, "while-paused").await?;
    cluster.member_mut(follower).resume()?;
    let log = stops_by_itself(&mut cluster, follower).await?;
    eprintln!(
        "the paused member learned of its removal {}",
        if log.contains("no longer lists it; this member's is at") {
            "from a peer's refusal"
        } else {
            "by applying the membership"
        }
    );
    refuses_to_start_again(&mut cluster, follower).await
}
