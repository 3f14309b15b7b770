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
