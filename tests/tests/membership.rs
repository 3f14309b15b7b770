//! Membership changes through the etcd Cluster API: a learner that must catch up
//! from a snapshot (the leader has purged its early log), promotion, removal of a
//! voter, and etcd's errors for promoting a lagging learner and removing an
//! unknown member.

use anyhow::{ensure, Context, Result};
use etcd_client::{Client, MemberAddOptions};
use raftkv_tests::kv::{get_value, get_value_serializable};
use raftkv_tests::wait::{self, Deadline, CONVERGE_TIMEOUT};
use raftkv_tests::{expect_grpc_error, grpc_status, Cluster, ClusterOptions, Ports};
use tonic::Code;

const KEYS: usize = 300;

fn key(i: usize) -> String {
    format!("members/{i:04}")
}

/// Promote `id`, retrying while the leader still considers the learner behind
/// (FailedPrecondition) for a short while after it has caught up; any other error
/// fails at once.
async fn promote_when_in_sync(client: &mut Client, id: u64) -> Result<()> {
    let deadline = Deadline::after(CONVERGE_TIMEOUT, format!("MemberPromote {id} to succeed"));
    loop {
        match client.member_promote(id).await {
            Ok(_) => return Ok(()),
            Err(err) if grpc_status(&err).map(|s| s.code()) == Some(Code::FailedPrecondition) => {
                deadline.tick(err).await?
            }
            Err(err) => return Err(err).context(format!("MemberPromote {id}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn learner_catches_up_from_snapshot_is_promoted_then_a_voter_is_removed() -> Result<()> {
    let mut cluster = ClusterOptions::new()
        .arg("--snapshot-count", 20)
        .start(3)
        .await?;
    let leader = cluster.wait_leader().await?;
    let mut client = cluster.client().await?;
    // 300 entries with a snapshot every 20: the leader's log no longer starts at 1,
    // so the new member can only catch up by receiving a snapshot.
    for i in 0..KEYS {
        client.put(key(i), format!("v{i}"), None).await?;
    }
    let last_key = key(KEYS - 1);
    // The interface doc names no metrics; the README promises the snapshot index in
    // /metrics, and this is the one place a test needs it.
    let snapshot_index = cluster
        .member(leader)
        .metric("raftkv_raft_snapshot_index")
        .await?
        .context("leader's /metrics has no raftkv_raft_snapshot_index")?;
    ensure!(
        snapshot_index > 0.0,
        "the leader has not snapshotted after {KEYS} writes with --snapshot-count 20"
    );
    let purged_index = cluster
        .member(leader)
        .metric("raftkv_raft_purged_index")
        .await?
        .context("leader's /metrics has no raftkv_raft_purged_index")?;
    ensure!(
        purged_index > 0.0,
        "the leader has not purged its early log, so a snapshot would not be needed"
    );

    let ports = Ports::allocate()?;
    let added = client
        .member_add(
            [ports.peer_url()],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await
        .context("MemberAdd learner")?;
    let new = added.member().context("MemberAdd response has no member")?;
    let new_id = new.id();
    ensure!(new_id != 0, "MemberAdd assigned id 0");
    ensure!(
        new.is_learner(),
        "MemberAdd(is_learner) returned a non-learner: {new:?}"
    );
    ensure!(
        new.peer_urls() == [ports.peer_url()],
        "MemberAdd returned peer URLs {:?}",
        new.peer_urls()
    );
    ensure!(
        added.member_list().len() == 4,
        "MemberAdd's member list has {} members",
        added.member_list().len()
    );

    let joiner_name = cluster.add_joiner(new_id, ports)?.name.clone();
    let joiner_client = cluster.member(new_id).client().await?;

    // Caught up: the learner serves the last key from its own state, and its applied
    // index is close to the leader's.
    wait::until(
        CONVERGE_TIMEOUT,
        format!("{joiner_name} to serve {last_key} from local state"),
        || {
            let mut c = joiner_client.clone();
            let last_key = last_key.clone();
            async move { Ok(get_value_serializable(&mut c, &last_key).await?.map(|_| ())) }
        },
    )
    .await?;
    let (leader_member, joiner) = (cluster.member(leader), cluster.member(new_id));
    wait::until(
        CONVERGE_TIMEOUT,
        format!("{joiner_name}'s raft applied index to be within 10 of the leader's"),
        || async move {
            let leader_applied = leader_member.status().await?.raft_applied_index();
            let joiner_applied = joiner.status().await?.raft_applied_index();
            Ok((joiner_applied + 10 >= leader_applied).then_some(()))
        },
    )
    .await?;

    // With the leader's early log purged, the only way in was a snapshot.
    let joiner_snapshot = cluster
        .member(new_id)
        .metric("raftkv_raft_snapshot_index")
        .await?
        .context("new member's /metrics has no raftkv_raft_snapshot_index")?;
    ensure!(
        joiner_snapshot >= purged_index,
        "the new member caught up without installing a snapshot covering the purged log \
         (its snapshot index {joiner_snapshot}, leader purged up to {purged_index})"
    );

    promote_when_in_sync(&mut client, new_id).await?;

    // Four voters; the new one shows its name and client URL once it has started.
    let joiner_url = cluster.member(new_id).client_url();
    let members = wait::until(
        CONVERGE_TIMEOUT,
        "MemberList to show 4 voters including the started new member",
        || {
            let mut c = client.clone();
            let (joiner_name, joiner_url) = (joiner_name.clone(), joiner_url.clone());
            async move {
                let list = c.member_list().await?;
                let members = list.members().to_vec();
                let ok = members.len() == 4
                    && members.iter().all(|m| !m.is_learner())
                    && members.iter().any(|m| {
                        m.id() == new_id
                            && m.name() == joiner_name
                            && m.client_urls() == [joiner_url.clone()]
                    });
                Ok(ok.then_some(members))
            }
        },
    )
    .await?;
    eprintln!("members after promote: {members:?}");

    // Remove a voter that is neither the leader nor the new member.
    let leader = cluster.wait_leader().await?;
    let victim = *cluster
        .live_ids()
        .iter()
        .find(|&&id| id != leader && id != new_id)
        .context("no follower to remove")?;
    let removed = client.member_remove(victim).await.context("MemberRemove")?;
    ensure!(
        removed.members().len() == 3 && removed.members().iter().all(|m| m.id() != victim),
        "MemberRemove response still lists {victim} or has the wrong size: {:?}",
        removed.members()
    );
    // A removed member stops by itself (tests/removed_member.rs); this test
    // does not wait for that.
    cluster.member_mut(victim).kill9()?;

    cluster.wait_leader().await?;
    let mut client = cluster.client().await?;
    client
        .put("members/after-remove", "still-serving", None)
        .await?;
    for id in cluster.live_ids() {
        let mut c = cluster.member(id).client().await?;
        let got = get_value(&mut c, "members/after-remove").await?;
        ensure!(
            got.as_deref() == Some("still-serving"),
            "{} returned {got:?} after the removal",
            cluster.member(id).name
        );
        let first = get_value(&mut c, &key(0)).await?;
        ensure!(
            first.as_deref() == Some("v0"),
            "{} lost {}: {first:?}",
            cluster.member(id).name,
            key(0)
        );
    }
    let list = client.member_list().await?;
    ensure!(
        list.members().len() == 3 && list.members().iter().all(|m| m.id() != victim),
        "MemberList after removing {victim}: {:?}",
        list.members()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn promoting_a_lagging_learner_and_removing_an_unknown_member_fail_like_etcd() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let mut client = cluster.client().await?;

    // A learner whose peer URL has no process behind it can never catch up.
    let nowhere = Ports::allocate()?;
    let added = client
        .member_add(
            [nowhere.peer_url()],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await
        .context("MemberAdd learner")?;
    let learner_id = added
        .member()
        .context("MemberAdd response has no member")?
        .id();

    expect_grpc_error(
        client.member_promote(learner_id).await,
        Code::FailedPrecondition,
        "etcdserver: can only promote a learner member which is in sync with leader",
    )?;
    let list = client.member_list().await?;
    let learner = list
        .members()
        .iter()
        .find(|m| m.id() == learner_id)
        .context("the learner vanished from MemberList after the failed promote")?;
    ensure!(
        learner.is_learner(),
        "failed promote changed the learner: {learner:?}"
    );
    ensure!(
        learner.name().is_empty(),
        "a never-started member has a name: {learner:?}"
    );

    // An id no member has.
    let ids: Vec<u64> = list.members().iter().map(|m| m.id()).collect();
    let unknown = (0xdead_beef_u64..)
        .find(|id| !ids.contains(id))
        .unwrap_or(u64::MAX);
    expect_grpc_error(
        client.member_remove(unknown).await,
        Code::NotFound,
        "etcdserver: member not found",
    )?;

    // Removing the learner works, and the cluster still serves.
    client
        .member_remove(learner_id)
        .await
        .context("MemberRemove learner")?;
    let list = client.member_list().await?;
    ensure!(
        list.members().len() == 3,
        "MemberList after removing the learner: {:?}",
        list.members()
    );
    client.put("members/ok", "yes", None).await?;
    ensure!(get_value(&mut client, "members/ok").await?.as_deref() == Some("yes"));
    Ok(())
}

/// etcd's strict reconfiguration check (issue 17, item 7): a voter is added
/// only while the voters the leader hears from stay a quorum of the grown
/// membership. Three voters and two unreachable additions still have a
/// quorum (3 of 5); a third unreachable voter is refused with etcd's
/// "unhealthy cluster" instead of leaving six voters that can commit nothing,
/// not even the removals that would undo it.
#[tokio::test(flavor = "multi_thread")]
async fn adding_voters_that_would_leave_no_reachable_quorum_is_refused() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    cluster.wait_leader().await?;
    let mut client = cluster.client().await?;
    // Ports nobody listens on: these members never start.
    let nowhere = |port: u16| vec![format!("http://127.0.0.1:{port}")];
    let mut added = Vec::new();
    for port in [1, 2] {
        let resp = client.member_add(nowhere(port), None).await?;
        added.push(resp.member().context("no member in the reply")?.id());
    }
    let third = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        client.member_add(nowhere(3), None),
    )
    .await
    .context("the third add hung: the membership it proposed cannot commit")?;
    expect_grpc_error(third, Code::Unavailable, "etcdserver: unhealthy cluster")?;

    // The cluster still commits: a write, and removing the two unreachable.
    client.put("after", "1", None).await?;
    for id in added {
        client.member_remove(id).await?;
    }
    ensure!(
        client.member_list().await?.members().len() == 3,
        "the unreachable members were not removed"
    );
    Ok(())
}
