//! Auth: users, roles and permissions with etcdctl (its usual setup: `user add
//! root`, `auth enable`) and the etcd-client crate (`ConnectOptions::with_user`),
//! and etcd's errors for a missing token, a wrong password and a forbidden key.

use anyhow::{ensure, Context, Result};
use etcd_client::{Client, ConnectOptions, WatchOptions};
use raftkv_tests::etcdctl::Etcdctl;
use raftkv_tests::grpc::grpc_status;
use raftkv_tests::ClusterOptions;

#[tokio::test(flavor = "multi_thread")]
async fn users_roles_and_permissions_are_enforced_like_etcd() -> Result<()> {
    let cluster = ClusterOptions::new().start(3).await?;
    let endpoints = cluster.endpoints();
    let ctl = Etcdctl::new(&endpoints)?;
    let root = |args: &[&str]| {
        let mut v = vec!["--user", "root:rootpw"];
        v.extend_from_slice(args);
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let ctl = ctl.clone();
        async move {
            ctl.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
                .await
        }
    };

    ensure!(
        run(vec!["user".into(), "add".into(), "root:rootpw".into()])
            .await?
            .ok()?
            .stdout
            .trim()
            == "User root created"
    );
    let enabled = ctl.run(&["auth", "enable"]).await?.ok()?;
    ensure!(
        enabled.stdout.trim() == "Authentication Enabled",
        "auth enable printed {:?}",
        enabled.stdout
    );

    let anonymous = ctl.run(&["put", "k", "v"]).await?.failed()?;
    ensure!(
        anonymous.stderr.contains("etcdserver: user name is empty"),
        "no token: {:?}",
        anonymous.stderr
    );
    run(root(&["role", "add", "app"])).await?.ok()?;
    run(root(&[
        "role",
        "grant-permission",
        "app",
        "readwrite",
        "app/",
        "--prefix=true",
    ]))
    .await?
    .ok()?;
    run(root(&["user", "add", "alice:alicepw"])).await?.ok()?;
    run(root(&["user", "grant-role", "alice", "app"]))
        .await?
        .ok()?;
    let users = run(root(&["user", "list"])).await?.ok()?;
    ensure!(
        users.stdout == "alice\nroot\n",
        "user list printed {:?}",
        users.stdout
    );

    // etcd-client with a user: allowed inside app/, denied outside.
    let opts = ConnectOptions::new().with_user("alice", "alicepw");
    let mut alice = Client::connect(&endpoints, Some(opts)).await?;
    alice.put("app/x", "1", None).await?;
    ensure!(alice.get("app/x", None).await?.kvs()[0].value() == b"1");
    let err = alice
        .put("other", "1", None)
        .await
        .expect_err("alice wrote outside app/");
    let status = grpc_status(&err).context("no gRPC status")?;
    ensure!(
        status.code() == tonic::Code::PermissionDenied
            && status.message() == "etcdserver: permission denied",
        "write outside the role: {status:?}"
    );
    // A watch outside the permitted range is canceled.
    let mut stream = alice.watch("other", Some(WatchOptions::new())).await?;
    let resp = stream.message().await?.context("no watch response")?;
    ensure!(
        resp.canceled(),
        "a forbidden watch was not canceled: {resp:?}"
    );

    let wrong = Client::connect(
        &endpoints,
        Some(ConnectOptions::new().with_user("alice", "nope")),
    )
    .await;
    let err = wrong.err().context("a wrong password connected")?;
    let status = grpc_status(&err).context("no gRPC status")?;
    ensure!(
        status.message() == "etcdserver: authentication failed, invalid user ID or password",
        "wrong password: {status:?}"
    );
    // Only root manages auth.
    let err = alice.user_list().await.expect_err("alice listed users");
    ensure!(
        grpc_status(&err).is_some_and(|s| s.code() == tonic::Code::PermissionDenied),
        "{err:?}"
    );

    let disabled = run(root(&["auth", "disable"])).await?.ok()?;
    ensure!(
        disabled.stdout.trim() == "Authentication Disabled",
        "auth disable printed {:?}",
        disabled.stdout
    );
    ctl.run(&["put", "k", "v"]).await?.ok()?;
    Ok(())
}

/// `--auth-token-ttl` as etcd has it: a simple token unused for longer than
/// the TTL is refused with etcd's "invalid auth token" (each use starts the
/// TTL again), and a client that authenticates again on that error, as
/// etcd's clients do, keeps working.
#[tokio::test(flavor = "multi_thread")]
async fn an_unused_token_expires_after_the_auth_token_ttl() -> Result<()> {
    let cluster = ClusterOptions::new()
        .arg("--auth-token-ttl", 2)
        .start(3)
        .await?;
    let endpoints = cluster.endpoints();
    let mut admin = Client::connect(&endpoints, None).await?;
    raftkv_tests::auth::enable_with_root_and_alice(&mut admin, "alicepw").await?;
    // One member: a simple token's TTL runs on each member by itself (as in
    // etcd), so uses spread over members would each leave the others idle.
    let endpoints = endpoints[..1].to_vec();
    let alice = |refresh: bool| {
        let options = ConnectOptions::new()
            .with_user("alice", "alicepw")
            .with_auto_token_refresh(refresh);
        Client::connect(endpoints.clone(), Some(options))
    };
    let mut plain = alice(false).await?;
    let mut refreshing = alice(true).await?;
    // Used every second: the token lives on.
    for i in 0..4 {
        plain.put("app/used", i.to_string(), None).await?;
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    }
    // Unused for longer than the TTL: refused as etcd refuses it.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let err = plain
        .put("app/late", "1", None)
        .await
        .expect_err("a token unused past its TTL was accepted");
    let status = grpc_status(&err).context("a gRPC status")?;
    ensure!(
        status.code() == tonic::Code::Unauthenticated
            && status.message() == "etcdserver: invalid auth token",
        "an expired token: {status:?}"
    );
    // A client that authenticates again on that error goes on.
    refreshing.put("app/late", "2", None).await?;
    let got = refreshing.get("app/late", None).await?;
    ensure!(got.kvs()[0].value() == b"2");
    Ok(())
}
