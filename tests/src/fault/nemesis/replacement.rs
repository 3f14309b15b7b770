//! Faults that change who the members are: replace-member (a planned
//! replacement), replace-member-while-follower-cut (the same, begun while
//! another follower is cut off), and wipe-follower-kill-leader (a disk lost
//! under a voter, found the hard way). Each ends with the victim removed and
//! a fresh member, with a new id and an empty data dir, added as a learner
//! and promoted.

use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use etcd_client::{Client, MemberAddOptions};

use super::{pick_from, Fault, Nemesis};
use crate::grpc::connect_with;
use crate::wait::{self, CONVERGE_TIMEOUT};

/// How long a wiped member may take to learn that its peers refuse it, once
/// a leader is back: a few election timeouts.
const WIPED_STOPS_WITHIN: Duration = Duration::from_secs(30);

/// What an empty `--join` member refused by its leader's record says in
/// `/readyz` (see the node's `incarnation` module).
const WAITS_TO_BE_ADDED: &str = "remove the member and add it again";

/// The shortest hold of wipe-follower-kill-leader: a restart and two
/// election timeouts, with room to spare.
const WIPE_FAULT_HOLD: Duration = Duration::from_secs(5);

/// The exit status of a member that stopped because it was removed or its
/// data dir replaced (`raftkv_node::errors::NO_LONGER_MEMBER_EXIT_CODE`).
const NO_LONGER_MEMBER_EXIT_CODE: i32 = 3;

impl Nemesis<'_> {
    /// Remove a member (the leader for an even pick), kill it, add a fresh
    /// one as learner, promote it.
    pub(super) async fn replace_member(&mut self, fault: &Fault) -> Result<()> {
        let (leader, followers) = self.leader_and_followers().await?;
        let victim = if fault.pick.is_multiple_of(2) {
            leader
        } else {
            *pick_from(&followers, fault.pick / 2)?
        };
        let name = "replace-member";
        let client = self.client_of_others(victim).await?;
        self.remove(name, &client, victim).await?;
        self.cluster.member_mut(victim).kill9()?;
        self.add_fresh_member(name, &client).await
    }

    /// A membership change across a partition: one follower is cut off from
    /// every other member, and another follower is removed meanwhile. With
    /// three members the removal cannot commit (the new membership needs the
    /// cut-off follower), so it waits in the log, or the client times out,
    /// until the cut heals after the hold; then the replacement completes.
    pub(super) async fn replace_member_while_follower_cut(&mut self, fault: &Fault) -> Result<()> {
        let name = "replace-member-while-follower-cut";
        let (leader, followers) = self.leader_and_followers().await?;
        ensure!(followers.len() >= 2, "{name} needs two followers");
        let cut = *pick_from(&followers, fault.pick)?;
        let victim = *pick_from(&followers, fault.pick + 1)?;
        let cut_addr = self.cluster.member(cut).ports.host;
        let others: Vec<_> = self
            .live_ids()
            .into_iter()
            .filter(|&id| id != cut)
            .map(|id| self.cluster.member(id).ports.host)
            .collect();
        let network = self
            .cluster
            .network()
            .ok_or_else(|| anyhow!("{name} without a network of namespaces"))?;
        for other in others {
            network.cut(cut_addr, other)?;
        }
        self.note(format!(
            "{name}: cut member {cut:x} off (leader {leader:x})"
        ));
        let client = self.client_of_others(victim).await?;
        let until = tokio::time::Instant::now() + fault.hold;
        let during = loop {
            let mut attempt = client.clone();
            let removal =
                tokio::time::timeout(Duration::from_secs(2), attempt.member_remove(victim));
            match removal.await {
                Ok(Ok(_)) => break "committed during the cut",
                _ if tokio::time::Instant::now() >= until => break "not committed during the cut",
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        };
        self.note(format!("{name}: MemberRemove of {victim:x} {during}"));
        tokio::time::sleep_until(until).await;
        self.cluster
            .network()
            .ok_or_else(|| anyhow!("network gone"))?
            .heal()?;
        self.note(format!("{name}: healed"));
        self.remove(name, &client, victim).await?;
        self.cluster.member_mut(victim).kill9()?;
        self.add_fresh_member(name, &client).await
    }

    /// Issue 17, finding 5, as a fault: a follower (`lagging`) is killed and
    /// misses some acknowledged writes; the other follower (`wiped`), which
    /// acknowledged them, loses its data dir and restarts under its old id;
    /// the leader is killed and `lagging` restarts. A wiped member that voted
    /// would let `lagging` lead without those writes (the checkers see them
    /// lost); it must instead be refused (see `wiped_member_gives_up`) once a
    /// leader is back, and is then replaced. The cluster has no leader until the old
    /// one returns after the hold.
    pub(super) async fn wipe_follower_kill_leader(&mut self, fault: &Fault) -> Result<()> {
        let name = "wipe-follower-kill-leader";
        let (leader, followers) = self.leader_and_followers().await?;
        ensure!(followers.len() >= 2, "{name} needs two followers");
        let lagging = *pick_from(&followers, fault.pick)?;
        let wiped = *pick_from(&followers, fault.pick + 1)?;
        self.cluster.member_mut(lagging).kill9()?;
        self.note(format!("{name}: SIGKILL member {lagging:x}"));
        tokio::time::sleep(Duration::from_millis(1500)).await;

        let member = self.cluster.member_mut(wiped);
        member.kill9()?;
        std::fs::remove_dir_all(member.data_dir()).context("wiping the data dir")?;
        member.restart()?;
        self.note(format!(
            "{name}: SIGKILL member {wiped:x}, wiped its data dir, restarted it"
        ));
        self.cluster.member_mut(leader).kill9()?;
        self.cluster.member_mut(lagging).restart()?;
        self.note(format!(
            "{name}: SIGKILL leader {leader:x}, restarted member {lagging:x}"
        ));
        // Long enough for `lagging` to be elected, were the wiped member to
        // vote for it.
        tokio::time::sleep(fault.hold.max(WIPE_FAULT_HOLD)).await;
        self.cluster.member_mut(leader).restart()?;
        self.note(format!("{name}: restarted member {leader:x}"));

        self.wiped_member_gives_up(wiped).await?;
        self.note(format!(
            "{name}: member {wiped:x} refused as a replaced data dir"
        ));
        let client = self.client_of_others(wiped).await?;
        self.remove(name, &client, wiped).await?;
        self.add_fresh_member(name, &client).await
    }

    /// The wiped member `id` learns that its peers refuse it: one started
    /// with `--initial-cluster` stops (status 3); an empty `--join` member
    /// keeps waiting to be added again and says why in its readiness. Either
    /// way it is then killed for good.
    async fn wiped_member_gives_up(&mut self, id: u64) -> Result<()> {
        let member = self.cluster.member_mut(id);
        if member.args().iter().any(|a| a == "--join") {
            let addr = member.ports.metrics_addr();
            crate::http::until_body_contains(
                &addr,
                "/readyz",
                WAITS_TO_BE_ADDED,
                WIPED_STOPS_WITHIN,
            )
            .await?;
        } else {
            let status = member.wait_exit(WIPED_STOPS_WITHIN).await?;
            ensure!(
                status.code() == Some(NO_LONGER_MEMBER_EXIT_CODE),
                "the wiped member {id:x} did not stop as replaced ({status}):\n{}",
                member.log_tail(10)
            );
        }
        self.cluster.member_mut(id).kill9() // stopped for good: not a crash
    }

    /// A client of every live member but `id`.
    async fn client_of_others(&mut self, id: u64) -> Result<Client> {
        let others: Vec<String> = self
            .live_ids()
            .into_iter()
            .filter(|&other| other != id)
            .map(|other| self.cluster.member(other).client_endpoint())
            .collect();
        connect_with(&others, self.cluster.client_tls(), Duration::from_secs(5)).await
    }

    /// MemberRemove `victim`, retried until the cluster takes it.
    async fn remove(&mut self, name: &str, client: &Client, victim: u64) -> Result<()> {
        wait::until(
            CONVERGE_TIMEOUT,
            format!("MemberRemove of {victim:x}"),
            || {
                let mut client = client.clone();
                async move {
                    match client.member_remove(victim).await {
                        Ok(_) => Ok(Some(())),
                        // An earlier attempt, whose answer was lost, did it.
                        Err(e) if e.to_string().contains("member not found") => Ok(Some(())),
                        Err(e) => Err(e.into()),
                    }
                }
            },
        )
        .await?;
        self.removed.insert(victim);
        self.note(format!("{name}: removed member {victim:x}"));
        Ok(())
    }

    /// MemberAdd a learner on new ports, start it with `--join`, promote it
    /// once it has caught up.
    async fn add_fresh_member(&mut self, name: &str, client: &Client) -> Result<()> {
        let ports = self.cluster.allocate_ports()?;
        let peer_url = ports.peer_url();
        let added = wait::until(
            CONVERGE_TIMEOUT,
            format!("MemberAdd of learner {peer_url}"),
            || {
                let (mut client, peer_url) = (client.clone(), peer_url.clone());
                async move {
                    let resp = client
                        .member_add([peer_url], Some(MemberAddOptions::new().with_is_learner()))
                        .await?;
                    Ok(resp.member().map(|m| m.id()))
                }
            },
        )
        .await?;
        self.cluster
            .add_joiner(added, ports)
            .context("starting the new member")?;
        self.note(format!(
            "{name}: added learner {added:x} at {peer_url}, started it"
        ));
        wait::until(
            Duration::from_secs(60),
            format!("MemberPromote of {added:x}"),
            || {
                let mut client = client.clone();
                async move {
                    client.member_promote(added).await?;
                    Ok(Some(()))
                }
            },
        )
        .await?;
        self.note(format!("{name}: promoted {added:x} to voter"));
        Ok(())
    }
}
