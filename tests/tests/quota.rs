//! The space quota (`--quota-backend-bytes`): once a member's store exceeds it,
//! writes that add data fail with etcd's "database space exceeded" on every
//! member and a NOSPACE alarm is raised; deleting, compacting, defragmenting and
//! disarming (etcd's recovery steps) make the cluster writable again.

use anyhow::{ensure, Context, Result};
use raftkv_tests::etcdctl::Etcdctl;
use raftkv_tests::grpc::grpc_status;
use raftkv_tests::ClusterOptions;

/// Large next to what RocksDB keeps whatever the data (its info log, manifest
/// and options files, a few hundred KB), so a defragmented member is clearly
/// under it.
const QUOTA: i64 = 2_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn exceeding_the_quota_raises_nospace_and_etcds_recovery_steps_clear_it() -> Result<()> {
    let cluster = ClusterOptions::new()
        .arg("--quota-backend-bytes", QUOTA)
        .start(3)
        .await?;
    let mut c = cluster.client().await?;
    let value = "x".repeat(4000);
    let mut refused = None;
    for i in 0..2000 {
        if let Err(e) = c.put(format!("q/{i:05}"), value.clone(), None).await {
            refused = Some(e);
            break;
        }
    }
    let err = refused.context("2000 puts of 4 KB never exceeded a 2 MB quota")?;
    let status = grpc_status(&err).context("no gRPC status")?;
    ensure!(
        status.code() == tonic::Code::ResourceExhausted
            && status.message() == "etcdserver: mvcc: database space exceeded",
        "quota error: {status:?}"
    );
    // Every member refuses now (the alarm is replicated), even one under quota.
    for id in cluster.live_ids() {
        let mut mc = cluster.member(id).client().await?;
        ensure!(
            mc.put("q/more", "x", None).await.is_err(),
            "member {id} accepted a write under NOSPACE"
        );
    }
    let ctl = Etcdctl::new(&cluster.endpoints())?;
    let list = ctl.run(&["alarm", "list"]).await?.ok()?;
    ensure!(
        list.stdout.contains("alarm:NOSPACE"),
        "alarm list printed {:?}",
        list.stdout
    );
    let status = ctl.run(&["endpoint", "status", "-w", "json"]).await?.ok()?;
    ensure!(
        status.stdout.contains("alarm:NOSPACE"),
        "endpoint status shows no alarm: {:?}",
        status.stdout
    );

    // etcd's recovery: delete, compact, defragment, disarm.
    let deleted = c
        .delete("q/", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await?;
    let rev = deleted.header().context("no header")?.revision();
    ctl.run(&["compaction", &rev.to_string()]).await?.ok()?;
    // Compaction returns once the leader applied it; a follower defragmented
    // before applying it would stay over quota and rightly raise NOSPACE again.
    applied_everywhere(&cluster, c.status().await?.raft_index()).await?;
    ctl.run(&["defrag"]).await?.ok()?;
    // RocksDB deletes the files a compaction made obsolete just after it
    // returns; a write before that would still find the member over quota.
    for id in cluster.live_ids() {
        let member = cluster.member(id);
        raftkv_tests::wait::until(
            raftkv_tests::wait::CONVERGE_TIMEOUT,
            format!("member {id} under quota after defrag"),
            || async move { Ok((member.status().await?.db_size() < QUOTA).then_some(())) },
        )
        .await?;
    }
    ctl.run(&["alarm", "disarm"]).await?.ok()?;
    // A member refuses writes while its own copy of the alarm is raised, so
    // the write below waits until the disarm reached every member.
    applied_everywhere(&cluster, c.status().await?.raft_index()).await?;
    let after = ctl.run(&["alarm", "list"]).await?.ok()?;
    ensure!(
        after.stdout.trim().is_empty(),
        "alarms left after disarm: {:?}",
        after.stdout
    );
    c.put("q/after", "ok", None)
        .await
        .context("a write after recovery")?;
    Ok(())
}

/// Wait until every live member has applied the log up to `index`.
async fn applied_everywhere(cluster: &raftkv_tests::Cluster, index: u64) -> Result<()> {
    for id in cluster.live_ids() {
        let member = cluster.member(id);
        raftkv_tests::wait::until(
            raftkv_tests::wait::CONVERGE_TIMEOUT,
            format!("member {id} applying index {index}"),
            || async move {
                let status = member.status().await?;
                Ok((status.raft_applied_index() >= index).then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}
