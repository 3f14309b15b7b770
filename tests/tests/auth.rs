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
