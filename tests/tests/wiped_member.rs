//! A voter whose data dir was wiped must not come back under its old id
//! (issue 17, finding 5). With an empty log it would grant its vote to any
//! candidate, and a candidate that lacks a committed entry could win with it:
//! the entry, acknowledged to a client, is gone. Each data dir has an
//! incarnation the cluster records; a member that comes back with another one
//! is refused by its peers and stops, saying how to replace it (remove it and
//! add it again).

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use etcd_client::MemberAddOptions;
use raftkv_tests::kv::get_value;
use raftkv_tests::wait::{self, CONVERGE_TIMEOUT};
use raftkv_tests::{Cluster, ClusterOptions};

/// How long the wiped member may take to learn that its peers refuse it: a
/// few election timeouts.
const STOP_WITHIN: Duration = Duration::from_secs(20);

/// `id` exited by itself (status 3), saying how to replace it.
fn stopped_as_replaced(cluster: &mut Cluster, id: u64) -> Result<()> {
    let member = cluster.member_mut(id);
    let status = member.last_exit().context("no exit status")?;
    let log = member.log_tail(40);
    ensure!(
        status.code() == Some(3) && log.contains("member remove") && log.contains("raftkv reset"),
        "the wiped member {id:x} exited with {status}, not 3, or without saying how to replace \
         it:\n{log}"
    );
    eprintln!("the wiped member {id:x} stopped:\n{}", member.log_tail(6));
    member.kill9() // stopped for good: not a crash
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_voter_cannot_vote_away_an_acknowledged_write() -> Result<()> {
    let mut cluster = ClusterOptions::new().start(3).await?;
    cluster.wait_published().await?;
    let leader = cluster.wait_leader().await?;
    let followers: Vec<u64> = cluster
        .live_ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let (lagging, wiped) = (followers[0], followers[1]);

    // Acknowledged by the leader and `wiped` only.
    cluster.member_mut(lagging).stop().await?;
    let mut client = cluster.member(leader).client().await?;
    client
        .put("acknowledged", "by the leader and the wiped member", None)
        .await
        .context("the write the wiped member acknowledged")?;

    // `wiped` loses its disk and comes back with the same flags; the leader,
    // the only other holder of the write, goes away; `lagging` returns.
    let member = cluster.member_mut(wiped);
    member.stop().await?;
    std::fs::remove_dir_all(member.data_dir()).context("wiping the data dir")?;
    member.restart()?;
    cluster.member_mut(leader).stop().await?;
    cluster.member_mut(lagging).restart()?;

    // `lagging` must never answer that the write does not exist. Before the
    // fix the wiped member voted for it and it led without the write.
    let mut lagging_client = cluster.member(lagging).client().await?;
    let deadline = tokio::time::Instant::now() + STOP_WITHIN;
    loop {
        let read = tokio::time::timeout(
            Duration::from_secs(1),
            get_value(&mut lagging_client, "acknowledged"),
        )
        .await;
        if let Ok(Ok(None)) = read {
            bail!(
                "member {lagging:x} leads without an acknowledged write: the wiped member \
                 {wiped:x} voted for it"
            );
        }
        if !cluster.member_mut(wiped).is_running() {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the wiped member {wiped:x} still runs {STOP_WITHIN:?} after it came back; log:\n{}",
            cluster.member(wiped).log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    stopped_as_replaced(&mut cluster, wiped)?;

    // The old leader returns: the write is there, once `lagging` (which may
    // still be starting: the wiped member can stop before it listens) and the
    // old leader have a leader again.
    cluster.member_mut(leader).restart()?;
    let got = wait::until(
        CONVERGE_TIMEOUT,
        "a read through the lagging member",
        || {
            let mut client = lagging_client.clone();
            async move { Ok(Some(get_value(&mut client, "acknowledged").await?)) }
        },
    )
    .await?;
    ensure!(
        got.as_deref() == Some("by the leader and the wiped member"),
        "after the old leader returned, the write reads {got:?}"
    );
    Ok(())
}

/// A member that joined with `--join` (as every operator-run pod does) comes
/// back empty, with no cluster id and no membership. It holds nothing to
/// reset: it keeps waiting to be added, refuses the leader that names its old
/// data dir, and says so in its readiness. Removing the member and adding it
/// again (MemberAdd of the same peer URL gives the same id) lets it join.
#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_member_that_joined_waits_until_it_is_removed_and_added_again() -> Result<()> {
    let mut cluster = ClusterOptions::new().start(3).await?;
    let mut client = cluster.client().await?;
    let ports = cluster.allocate_ports()?;
    let peer_url = ports.peer_url();
    let add = |mut client: etcd_client::Client, peer_url: String| async move {
        let added = client
            .member_add([peer_url], Some(MemberAddOptions::new().with_is_learner()))
            .await
            .context("MemberAdd")?;
        anyhow::Ok(added.member().context("MemberAdd without a member")?.id())
    };
    let promote = |client: &etcd_client::Client, id: u64| {
        let client = client.clone();
        wait::until(
            CONVERGE_TIMEOUT,
            format!("MemberPromote {id:x}"),
            move || {
                let mut client = client.clone();
                async move { Ok(client.member_promote(id).await.ok().map(drop)) }
            },
        )
    };
    let joiner = add(client.clone(), peer_url.clone()).await?;
    cluster.add_joiner(joiner, ports)?;
    promote(&client, joiner).await?;
    cluster.wait_published().await?;
    client.put("before", "the wipe", None).await?;

    let member = cluster.member_mut(joiner);
    member.kill9()?;
    std::fs::remove_dir_all(member.data_dir()).context("wiping the data dir")?;
    member.restart()?;
    let reason = raftkv_tests::http::until_body_contains(
        &cluster.member(joiner).ports.metrics_addr(),
        "/readyz",
        "remove the member and add it again",
        CONVERGE_TIMEOUT,
    )
    .await?;
    eprintln!("the wiped member waits: {reason}");
    ensure!(
        cluster.member_mut(joiner).is_running(),
        "the wiped --join member stopped; it should wait to be added again"
    );

    client.member_remove(joiner).await.context("MemberRemove")?;
    let again = add(client.clone(), peer_url).await?;
    ensure!(
        again == joiner,
        "MemberAdd of the same peer URL gave {again:x}, not {joiner:x}"
    );
    promote(&client, joiner).await?;
    let mut joined = cluster.member(joiner).client().await?;
    wait::until(
        CONVERGE_TIMEOUT,
        "the re-added member to serve the data",
        || {
            let mut joined = joined.clone();
            async move {
                Ok(
                    raftkv_tests::kv::get_value_serializable(&mut joined, "before")
                        .await?
                        .filter(|v| v == "the wipe"),
                )
            }
        },
    )
    .await?;
    joined.put("after", "it joined again", None).await?;
    Ok(())
}
