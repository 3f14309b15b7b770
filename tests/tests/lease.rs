//! Leases through the etcd-client crate against real members: the API, and the
//! promise that matters: a lease's keys are deleted at one revision on every
//! member, even when the leader that granted it dies first.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcd_client::{
    Client, EventType, GetOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions,
};
use raftkv_tests::grpc::grpc_status;
use raftkv_tests::wait::{self, CONVERGE_TIMEOUT};
use raftkv_tests::ClusterOptions;

#[tokio::test(flavor = "multi_thread")]
async fn grant_attach_keep_alive_time_to_live_revoke() -> Result<()> {
    let cluster = ClusterOptions::new().start(3).await?;
    let mut c: Client = cluster.client().await?;
    let lease = c.lease_grant(30, None).await?;
    ensure!(
        lease.ttl() == 30 && lease.id() > 0,
        "grant answered {lease:?}"
    );
    let id = lease.id();
    c.put("lease/a", "1", Some(PutOptions::new().with_lease(id)))
        .await?;
    c.put("lease/b", "2", Some(PutOptions::new().with_lease(id)))
        .await?;
    let kv = c.get("lease/a", None).await?.kvs()[0].clone();
    ensure!(
        kv.lease() == id,
        "key carries lease {} not {id}",
        kv.lease()
    );

    let ttl = c
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await?;
    ensure!(
        ttl.granted_ttl() == 30 && (1..=30).contains(&ttl.ttl()),
        "time-to-live {ttl:?}"
    );
    let mut keys: Vec<_> = ttl.keys().to_vec();
    keys.sort();
    ensure!(
        keys == vec![b"lease/a".to_vec(), b"lease/b".to_vec()],
        "keys {keys:?}"
    );
    let leases = c.leases().await?;
    ensure!(
        leases.leases().iter().any(|l| l.id() == id),
        "lease list lacks {id}"
    );

    let (mut keeper, mut acks) = c.lease_keep_alive(id).await?;
    keeper.keep_alive().await?;
    let ack = acks.message().await?.context("no keep-alive answer")?;
    ensure!(
        ack.id() == id && ack.ttl() == 30,
        "keep-alive answered {ack:?}"
    );

    let revoked = c.lease_revoke(id).await?;
    let rev = revoked.header().context("no header")?.revision();
    let left = c
        .get("lease/", Some(GetOptions::new().with_prefix()))
        .await?;
    ensure!(left.kvs().is_empty(), "revoke left keys {:?}", left.kvs());
    ensure!(
        left.header().context("no header")?.revision() == rev,
        "deletes spread over revisions"
    );
    let gone = c.lease_time_to_live(id, None).await?;
    ensure!(gone.ttl() == -1, "a revoked lease has TTL {}", gone.ttl());

    let err = c
        .put("lease/c", "x", Some(PutOptions::new().with_lease(id)))
        .await
        .expect_err("a put on a revoked lease must fail");
    let status = grpc_status(&err).context("no gRPC status")?;
    ensure!(
        status.code() == tonic::Code::NotFound
            && status.message() == "etcdserver: requested lease not found",
        "put on revoked lease: {status:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_outlives_its_leader_then_expires_at_one_revision_everywhere() -> Result<()> {
    let mut cluster = ClusterOptions::new().start(3).await?;
    let leader = cluster.wait_leader().await?;
    let mut c = cluster.client().await?;
    const TTL: i64 = 6;
    let id = c.lease_grant(TTL, None).await?.id();
    c.put("exp/a", "1", Some(PutOptions::new().with_lease(id)))
        .await?;
    c.put("exp/b", "2", Some(PutOptions::new().with_lease(id)))
        .await?;
    let survivors: Vec<u64> = cluster
        .live_ids()
        .into_iter()
        .filter(|m| *m != leader)
        .collect();

    // Watch the keys on each surviving member, to see each delete's revision there.
    let mut streams = Vec::new();
    for m in &survivors {
        let mut mc = cluster.member(*m).client().await?;
        let s = mc
            .watch("exp/", Some(WatchOptions::new().with_prefix()))
            .await?;
        streams.push((mc, s));
    }
    for (_, s) in streams.iter_mut() {
        s.message().await?.context("no watch created response")?;
    }

    cluster.member_mut(leader).kill9()?;
    let new_leader = cluster.wait_leader().await?;
    ensure!(new_leader != leader, "no new leader");
    // The new leader restarts the lease's full TTL: the keys are still there now.
    let mut sc = cluster.member(new_leader).client().await?;
    let now = sc
        .get("exp/", Some(GetOptions::new().with_prefix()))
        .await?;
    ensure!(
        now.kvs().len() == 2,
        "keys vanished at the leader change: {:?}",
        now.kvs()
    );

    // Then the lease expires: every survivor sees both deletes, at one revision.
    let mut revisions = Vec::new();
    for (_, s) in streams.iter_mut() {
        let mut deletes = Vec::new();
        while deletes.len() < 2 {
            let resp = tokio::time::timeout(Duration::from_secs(30), s.message())
                .await
                .context("lease did not expire within 30s")??
                .context("watch ended")?;
            for e in resp.events() {
                ensure!(
                    e.event_type() == EventType::Delete,
                    "unexpected event {e:?}"
                );
                deletes.push(e.kv().context("no kv")?.mod_revision());
            }
        }
        ensure!(
            deletes[0] == deletes[1],
            "one member deleted at two revisions: {deletes:?}"
        );
        revisions.push(deletes[0]);
    }
    ensure!(
        revisions.windows(2).all(|w| w[0] == w[1]),
        "members deleted at different revisions: {revisions:?}"
    );
    wait::until(
        CONVERGE_TIMEOUT,
        "the expired lease to be gone from the lease list",
        || {
            let mut sc = sc.clone();
            async move {
                Ok(sc
                    .leases()
                    .await?
                    .leases()
                    .iter()
                    .all(|l| l.id() != id)
                    .then_some(()))
            }
        },
    )
    .await?;
    Ok(())
}
