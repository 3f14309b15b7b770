//! Permissions judged against the auth state the log is at (issue 16, item
//! 5): a member checks a request against its own copy of users and roles,
//! which may lag the log. Once a revoke is acknowledged, no write may commit
//! and no linearizable read may answer on the strength of the permission it
//! took away, whichever member the request reaches. etcd stamps each write
//! with the auth revision it was checked at and refuses it at apply if the
//! revision moved on; reads are checked after their read barrier.
//!
//! The lagging member is made by stopping it (SIGSTOP) while the revoke
//! commits on the other two; the client's requests reach it as it resumes,
//! before it has applied the revoke.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcd_client::{Client, ConnectOptions, GetOptions};
use raftkv_tests::grpc::grpc_status;
use raftkv_tests::ClusterOptions;

#[tokio::test(flavor = "multi_thread")]
async fn a_revoke_wins_over_a_lagging_members_stale_copy() -> Result<()> {
    let mut cluster = ClusterOptions::new().start(3).await?;
    let mut setup = cluster.client().await?;
    raftkv_tests::auth::enable_with_root_and_alice(&mut setup, "alicepw").await?;

    // The lagging member: a follower, which alice talks to alone.
    let leader = setup.status().await?.leader();
    let mut lagging = None;
    for member in cluster.members() {
        let id = member
            .status()
            .await?
            .header()
            .context("no header")?
            .member_id();
        if id != leader {
            lagging = Some((member.id, member.client_endpoint()));
        }
    }
    let (lagging, lagging_endpoint) = lagging.context("no follower")?;
    let others: Vec<String> = cluster
        .members()
        .iter()
        .filter(|m| m.id != lagging)
        .map(|m| m.client_endpoint())
        .collect();
    let as_alice = ConnectOptions::new().with_user("alice", "alicepw");
    let mut alice = Client::connect([lagging_endpoint], Some(as_alice)).await?;
    alice.put("app/before", "1", None).await?;
    let as_root = ConnectOptions::new().with_user("root", "rootpw");
    let mut root = Client::connect(&others, Some(as_root)).await?;

    cluster.member_mut(lagging).pause()?;
    root.role_revoke_permission(
        "app",
        "app/",
        Some(etcd_client::RoleRevokePermissionOptions::new().with_prefix()),
    )
    .await
    .context("the revoke, acknowledged by the two running members")?;
    let (mut writer, mut reader) = (alice.clone(), alice.clone());
    let write = tokio::spawn(async move { writer.put("app/after", "2", None).await });
    let read = tokio::spawn(async move {
        reader
            .get("app/", Some(GetOptions::new().with_prefix()))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.member_mut(lagging).resume()?;

    let write = tokio::time::timeout(Duration::from_secs(15), write)
        .await
        .context("alice's write hung")??;
    let read = tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .context("alice's read hung")??;
    let denied = |e: &etcd_client::Error| {
        grpc_status(e).is_some_and(|s| s.code() == tonic::Code::PermissionDenied)
    };
    ensure!(
        write.as_ref().err().is_some_and(denied),
        "a write through the lagging member was not refused after the revoke: {write:?}"
    );
    ensure!(
        read.as_ref().err().is_some_and(denied),
        "a linearizable read through the lagging member was answered after the revoke: {read:?}"
    );
    let after = root.get("app/after", None).await?;
    ensure!(
        after.count() == 0,
        "alice's write committed after the revoke: {:?}",
        after.kvs()
    );
    Ok(())
}
