//! Lock and Election under auth (issue 16, item 4): a user may unlock, read,
//! observe, proclaim or resign only where its roles let it read or write, as
//! etcd's v3lock and v3election do through the KV calls they are made of.

use anyhow::{Context, Result};
use etcd_client::{Client, ConnectOptions, LeaderKey, LockOptions, ProclaimOptions, ResignOptions};
use raftkv_tests::grpc::expect_grpc_error;
use raftkv_tests::ClusterOptions;

const DENIED: &str = "etcdserver: permission denied";

#[tokio::test(flavor = "multi_thread")]
async fn lock_and_election_calls_need_the_callers_permissions() -> Result<()> {
    let cluster = ClusterOptions::new().start(1).await?;
    let endpoints = cluster.endpoints();
    let mut setup = cluster.client().await?;
    raftkv_tests::auth::enable_with_root_and_alice(&mut setup, "alicepw").await?;
    let connect = |user: &'static str, password: &'static str| {
        let endpoints = endpoints.clone();
        async move {
            let opts = ConnectOptions::new().with_user(user, password);
            Client::connect(&endpoints, Some(opts)).await
        }
    };
    let mut root = connect("root", "rootpw").await?;
    let mut alice = connect("alice", "alicepw").await?;

    // Root holds a lock and leads an election outside alice's app/.
    let lease = root.lease_grant(60, None).await?.id();
    let held = root
        .lock("secret", Some(LockOptions::new().with_lease(lease)))
        .await?
        .key()
        .to_vec();
    let won = root.campaign("boss", "root-value", lease).await?;
    let lead: LeaderKey = won.leader().context("no leader key")?.clone();

    expect_grpc_error(
        alice.unlock(held.clone()).await,
        tonic::Code::PermissionDenied,
        DENIED,
    )?;
    anyhow::ensure!(
        root.get(held.clone(), None).await?.count() == 1,
        "alice's refused unlock deleted root's lock key"
    );

    expect_grpc_error(
        alice.leader("boss").await,
        tonic::Code::PermissionDenied,
        DENIED,
    )?;
    let observed = match alice.observe("boss").await {
        Err(e) => Err(e),
        Ok(mut stream) => stream.message().await,
    };
    expect_grpc_error(observed, tonic::Code::PermissionDenied, DENIED)?;

    expect_grpc_error(
        alice
            .proclaim(
                "alice-value",
                Some(ProclaimOptions::new().with_leader(lead.clone())),
            )
            .await,
        tonic::Code::PermissionDenied,
        DENIED,
    )?;
    expect_grpc_error(
        alice
            .resign(Some(ResignOptions::new().with_leader(lead.clone())))
            .await,
        tonic::Code::PermissionDenied,
        DENIED,
    )?;
    let now = root.leader("boss").await?;
    anyhow::ensure!(
        now.kv().map(|kv| (kv.key(), kv.value())) == Some((lead.key(), &b"root-value"[..])),
        "root's leadership changed under alice's refused calls: {:?}",
        now.kv()
    );

    // Inside app/ alice does all of it.
    let mine = alice.lease_grant(60, None).await?.id();
    let key = alice
        .lock("app/lock", Some(LockOptions::new().with_lease(mine)))
        .await?
        .key()
        .to_vec();
    alice.unlock(key).await?;
    let won = alice.campaign("app/boss", "a1", mine).await?;
    let lead = won.leader().context("no leader key")?.clone();
    alice
        .proclaim("a2", Some(ProclaimOptions::new().with_leader(lead.clone())))
        .await?;
    let now = alice.leader("app/boss").await?;
    anyhow::ensure!(
        now.kv().map(|kv| kv.value()) == Some(&b"a2"[..]),
        "alice's proclaim: {:?}",
        now.kv()
    );
    let mut stream = alice.observe("app/boss").await?;
    stream.message().await?.context("observe ended")?;
    alice
        .resign(Some(ResignOptions::new().with_leader(lead)))
        .await?;
    Ok(())
}
