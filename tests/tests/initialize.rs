//! `raftkv initialize` (Admin.Initialize): how the operator turns a member started
//! with `--join` into the first member of a new cluster, exactly once.

use anyhow::{ensure, Context, Result};
use raftkv_tests::kv::get_value;
use raftkv_tests::wait::{self, CONVERGE_TIMEOUT};
use raftkv_tests::{ClusterOptions, Ports, RaftkvCli};

#[tokio::test(flavor = "multi_thread")]
async fn a_joining_member_is_initialized_once_and_only_with_its_own_token() -> Result<()> {
    // A lone member only to own the harness; the member under test joins nothing.
    let mut cluster = ClusterOptions::new().start(1).await?;
    let ports = Ports::allocate()?;
    let endpoint = ports.client_endpoint();
    let member = cluster.add_joiner(7, ports)?;
    let cli = RaftkvCli::new(std::slice::from_ref(&endpoint))?;

    // Once it serves HTTP: not initialized, so not ready.
    let code = wait::until(CONVERGE_TIMEOUT, "the joiner to answer /readyz", || async {
        Ok(member.readyz().await.ok())
    })
    .await?;
    ensure!(
        code == 503,
        "an uninitialized joiner answers /readyz with {code}"
    );

    let first = cli
        .run(&["initialize", "--cluster-token", "rc-uid-1"])
        .await?
        .ok()?;
    ensure!(
        first.stdout.starts_with("Initialized cluster "),
        "first initialize printed {:?}",
        first.stdout
    );
    member
        .wait_ready()
        .await
        .context("the initialized member becomes ready")?;

    let mut client = member.client().await?;
    client.put("init/k", "v", None).await?;
    ensure!(
        get_value(&mut client, "init/k").await?.as_deref() == Some("v"),
        "write lost"
    );

    // Repeating the same call (an operator retrying after a crash) changes nothing.
    let again = cli
        .run(&["initialize", "--cluster-token", "rc-uid-1"])
        .await?
        .ok()?;
    ensure!(
        again.stdout.starts_with("Already initialized"),
        "repeat printed {:?}",
        again.stdout
    );
    let first_id = first
        .stdout
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    ensure!(
        again.stdout.trim().ends_with(&first_id),
        "cluster id changed: {first_id} vs {:?}",
        again.stdout
    );

    // Another token would be another cluster: refused.
    let other = cli
        .run(&["initialize", "--cluster-token", "rc-uid-2"])
        .await?
        .failed()?;
    ensure!(
        other.stderr.contains("already belongs to cluster"),
        "stderr {:?}",
        other.stderr
    );

    // So is initializing a member of an existing cluster.
    let existing = RaftkvCli::new(&cluster.endpoints()[..1])?;
    let refused = existing
        .run(&["initialize", "--cluster-token", "x"])
        .await?
        .failed()?;
    ensure!(
        refused.stderr.contains("already belongs to cluster"),
        "stderr {:?}",
        refused.stderr
    );
    Ok(())
}

/// The operator's growth path: initialize member 1, then add member 2 with the id
/// the operator chose (pod ordinal + 1) as a learner, start it with `--join`.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_added_with_an_explicit_id_joins_under_that_id() -> Result<()> {
    let mut cluster = ClusterOptions::new().start(1).await?;
    let first_ports = Ports::allocate()?;
    let first_endpoint = first_ports.client_endpoint();
    let first = cluster.add_joiner(11, first_ports)?;
    wait::until(CONVERGE_TIMEOUT, "member 11 to answer /readyz", || async {
        Ok(first.readyz().await.ok())
    })
    .await?;
    let cli = RaftkvCli::new(std::slice::from_ref(&first_endpoint))?;
    cli.run(&["initialize", "--cluster-token", "grow"])
        .await?
        .ok()?;
    first.wait_ready().await?;
    first.client().await?.put("grow/k", "v", None).await?;

    let ports = Ports::allocate()?;
    let peer_url = ports.peer_url();
    let added = cli
        .run(&[
            "member",
            "add",
            "m12",
            "--peer-urls",
            &peer_url,
            "--learner",
            "--id",
            "12",
        ])
        .await?
        .ok()?;
    ensure!(
        added.stdout.starts_with("Member c added as a learner"),
        "printed {:?}",
        added.stdout
    );
    let second = cluster.add_joiner(12, ports)?;
    let mut c = second.client().await?;
    wait::until(
        CONVERGE_TIMEOUT,
        "member 12 to serve grow/k locally",
        || {
            let mut c = c.clone();
            async move { raftkv_tests::kv::get_value_serializable(&mut c, "grow/k").await }
        },
    )
    .await?;
    let list = c.member_list().await?;
    ensure!(
        list.members()
            .iter()
            .any(|m| m.id() == 12 && m.is_learner()),
        "member list lacks learner 12: {:?}",
        list.members()
    );
    let dup = cli
        .run(&[
            "member",
            "add",
            "again",
            "--peer-urls",
            "http://127.0.0.1:1",
            "--id",
            "12",
        ])
        .await?
        .failed()?;
    ensure!(
        dup.stderr.contains("member ID already exist"),
        "stderr {:?}",
        dup.stderr
    );
    Ok(())
}
