//! A fresh 3-member cluster from `--initial-cluster`: one leader that every member
//! agrees on, writes through a follower, linearizable reads from every member,
//! serializable reads converging on every member, and a member cut off from its
//! quorum that says it is not ready and refuses linearizable reads.

use anyhow::{ensure, Context, Result};
use raftkv_tests::kv::{get_value, get_value_serializable, revision};
use raftkv_tests::wait::{self, CONVERGE_TIMEOUT, LEADER_TIMEOUT};
use raftkv_tests::{grpc, http, Cluster};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn three_members_elect_one_leader_they_all_agree_on() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.wait_leader_all().await?;
    ensure!(
        [1, 2, 3].contains(&leader),
        "leader id {leader} is not one of the configured ids 1..=3"
    );

    for m in cluster.members() {
        let status = m.status().await?;
        let header = status.header().context("status has no header")?;
        ensure!(
            header.member_id() == m.id,
            "{} reports member_id {} in its header, configured --id {}",
            m.name,
            header.member_id(),
            m.id
        );
        ensure!(
            status.leader() == leader,
            "{} reports leader {}, others agreed on {leader}",
            m.name,
            status.leader()
        );
        ensure!(status.raft_term() > 0, "{} reports raft term 0", m.name);
    }

    // Every member is healthy and ready on its metrics listener.
    for m in cluster.members() {
        let healthz = http::get(&m.ports.metrics_addr(), "/healthz").await?;
        ensure!(
            healthz.status == 200,
            "{} /healthz: {}",
            m.name,
            healthz.status
        );
        ensure!(m.readyz().await? == 200, "{} /readyz is not 200", m.name);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn put_through_follower_is_readable_from_every_member() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.wait_leader().await?;
    let follower = cluster
        .members()
        .iter()
        .find(|m| m.id != leader)
        .context("no follower")?;

    let mut client = follower.client().await?;
    let put = client
        .put("basics/key", "value-1", None)
        .await
        .with_context(|| format!("put through follower {}", follower.name))?;
    let put_revision = revision(put.header())?;
    ensure!(put_revision > 1, "put returned revision {put_revision}");

    // Linearizable reads (the default) must see an acknowledged write on every
    // member at once, followers included: no waiting allowed.
    for m in cluster.members() {
        let mut c = m.client().await?;
        let resp = c.get("basics/key", None).await?;
        let got = resp.kvs().first().map(|kv| kv.value().to_vec());
        ensure!(
            got.as_deref() == Some(b"value-1".as_slice()),
            "linearizable get on {} returned {got:?} right after the put was acknowledged",
            m.name
        );
        ensure!(
            revision(resp.header())? >= put_revision,
            "{} answered at revision {} < the put's {put_revision}",
            m.name,
            revision(resp.header())?
        );
    }

    // An overwrite through another follower, read back linearizably from the first.
    let other = cluster
        .members()
        .iter()
        .find(|m| m.id != leader && m.id != follower.id)
        .context("no second follower")?;
    other
        .client()
        .await?
        .put("basics/key", "value-2", None)
        .await?;
    let seen = get_value(&mut follower.client().await?, "basics/key").await?;
    ensure!(
        seen.as_deref() == Some("value-2"),
        "{} returned {seen:?} after {} acknowledged value-2",
        follower.name,
        other.name
    );

    // Serializable reads answer from local state: they may lag, but must converge.
    for m in cluster.members() {
        let client = m.client().await?;
        wait::until(
            CONVERGE_TIMEOUT,
            format!("serializable get on {} to show value-2", m.name),
            || {
                let mut client = client.clone();
                async move {
                    let value = get_value_serializable(&mut client, "basics/key").await?;
                    Ok((value.as_deref() == Some("value-2")).then_some(()))
                }
            },
        )
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_without_quorum_is_not_ready_and_refuses_linearizable_reads() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    cluster
        .client()
        .await?
        .put("basics/before", "kept", None)
        .await?;
    let survivor = cluster.follower().await?.id;
    let others: Vec<u64> = cluster
        .live_ids()
        .into_iter()
        .filter(|&id| id != survivor)
        .collect();
    for &id in &others {
        cluster.member_mut(id).kill9()?;
    }

    // /readyz: 503 once the member knows no leader.
    let member = cluster.member(survivor);
    wait::until(
        LEADER_TIMEOUT,
        format!("/readyz on {} to answer 503 without a quorum", member.name),
        || async move { Ok((member.readyz().await? == 503).then_some(())) },
    )
    .await?;
    // A linearizable read needs a quorum: it must fail rather than answer from a
    // possibly stale state. A serializable read answers from local state.
    let short =
        grpc::connect_with_timeout(&[member.client_endpoint()], Duration::from_secs(3)).await?;
    let linearizable = short.clone().get("basics/before", None).await;
    ensure!(
        linearizable.is_err(),
        "linearizable get on {} without a quorum answered: {linearizable:?}",
        member.name
    );
    let local = get_value_serializable(&mut short.clone(), "basics/before").await?;
    ensure!(
        local.as_deref() == Some("kept"),
        "serializable get without a quorum: {local:?}"
    );

    cluster.restart(&others).await?;
    cluster.wait_leader_all().await?;
    let mut client = cluster.member(survivor).client().await?;
    ensure!(get_value(&mut client, "basics/before").await?.as_deref() == Some("kept"));
    Ok(())
}

/// Regression: a lone member has no followers to acknowledge it, and must not
/// take that for a lost quorum once the leader timeout (2 x election timeout) passes.
#[tokio::test(flavor = "multi_thread")]
async fn a_lone_member_stays_leader_past_the_leader_timeout() -> anyhow::Result<()> {
    let cluster = raftkv_tests::ClusterOptions::new()
        .arg("--election-timeout", 500)
        .start(1)
        .await?;
    let mut client = cluster.client().await?;
    client.put("lone/a", "1", None).await?;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    client.put("lone/b", "2", None).await?;
    let member = &cluster.members()[0];
    let ready = raftkv_tests::http::get(&member.ports.metrics_addr(), "/readyz").await?;
    anyhow::ensure!(
        ready.status == 200,
        "a lone member is not ready: {}",
        ready.body.trim()
    );
    anyhow::ensure!(
        member.status().await?.leader() == 1,
        "a lone member reports no leader"
    );
    Ok(())
}
