//! What a test waits for on a whole cluster: every member ready, every member's
//! attributes published, a leader that the live members agree on.
//!
//! Each wait polls the members through their public interfaces (`/readyz`,
//! Maintenance.Status, Cluster.MemberList) until it holds or its deadline passes,
//! and fails at once if a member that should be running has exited, showing the
//! tail of its log.

use crate::cluster::Cluster;
use crate::member::Member;
use crate::wait::{self, Deadline, CONVERGE_TIMEOUT, LEADER_TIMEOUT};
use anyhow::{anyhow, bail, Result};
use std::collections::BTreeMap;

impl Cluster {
    /// Fail if a member that should be running has exited.
    pub fn check_no_crash(&mut self) -> Result<()> {
        for m in self.members_mut().iter_mut() {
            if m.expected_running() && !m.is_running() {
                bail!(
                    "{} (id {}) exited unexpectedly ({}); log tail:\n{}",
                    m.name,
                    m.id,
                    m.last_exit().map_or("?".to_string(), |s| s.to_string()),
                    m.log_tail(30)
                );
            }
        }
        Ok(())
    }

    /// Wait until every member that should be running answers `/readyz` with 200.
    pub async fn wait_ready_all(&mut self) -> Result<()> {
        for m in self
            .members_mut()
            .iter_mut()
            .filter(|m| m.expected_running())
        {
            m.wait_ready().await?;
        }
        Ok(())
    }

    /// Wait until MemberList on every live member shows every live member's name
    /// and client URL, which a member publishes through the log once it runs. An
    /// etcd member has published them before it serves clients; a raftkv member
    /// may be ready a little earlier.
    pub async fn wait_published(&mut self) -> Result<()> {
        self.check_no_crash()?;
        // peer URL -> (name, client URLs)
        let expected: BTreeMap<String, (String, Vec<String>)> = self
            .members()
            .iter()
            .filter(|m| m.expected_running())
            .map(|m| (m.peer_url(), (m.name.clone(), vec![m.client_url()])))
            .collect();
        for m in self.members().iter().filter(|m| m.expected_running()) {
            let client = m.client().await?;
            wait::until(
                CONVERGE_TIMEOUT,
                format!(
                    "MemberList on {} to show every member's name and client URL",
                    m.name
                ),
                || {
                    let (mut client, expected) = (client.clone(), &expected);
                    async move {
                        let list = client.member_list().await?;
                        let published: BTreeMap<String, (String, Vec<String>)> = list
                            .members()
                            .iter()
                            .flat_map(|m| {
                                let attrs = (m.name().to_string(), m.client_urls().to_vec());
                                m.peer_urls()
                                    .iter()
                                    .map(move |p| (p.clone(), attrs.clone()))
                            })
                            .collect();
                        if expected
                            .iter()
                            .all(|(peer, attrs)| published.get(peer) == Some(attrs))
                        {
                            Ok(Some(()))
                        } else {
                            bail!("MemberList shows {published:?}")
                        }
                    }
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Wait until a majority of the live members report the same leader in
    /// Maintenance.Status and that leader reports itself; returns its id.
    pub async fn wait_leader(&mut self) -> Result<u64> {
        self.wait_leader_agreed(false).await
    }

    /// Like [`Cluster::wait_leader`], but every live member must agree.
    pub async fn wait_leader_all(&mut self) -> Result<u64> {
        self.wait_leader_agreed(true).await
    }

    async fn wait_leader_agreed(&mut self, all: bool) -> Result<u64> {
        let what = if all { "every" } else { "a majority of" };
        let deadline = Deadline::after(
            LEADER_TIMEOUT,
            format!("{what} live members to report the same leader"),
        );
        loop {
            self.check_no_crash()?;
            let live: Vec<&Member> = self
                .members()
                .iter()
                .filter(|m| m.expected_running())
                .collect();
            if live.is_empty() {
                bail!("waiting for a leader, but no member is running");
            }
            // (member name) -> (id it reports for itself, leader it reports)
            let mut reports = BTreeMap::new();
            for m in &live {
                let report = match m.status().await {
                    Ok(st) => Ok((st.header().map_or(0, |h| h.member_id()), st.leader())),
                    Err(err) => Err(format!("{err:#}")),
                };
                reports.insert(m.name.clone(), report);
            }
            let needed = if all { live.len() } else { live.len() / 2 + 1 };
            let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
            for (_, leader) in reports.values().flatten() {
                if *leader != 0 {
                    *votes.entry(*leader).or_default() += 1;
                }
            }
            let agreed = votes
                .iter()
                .find(|(_, &count)| count >= needed)
                .map(|(&leader, _)| leader);
            if let Some(leader) = agreed {
                let leader_confirms = reports
                    .values()
                    .flatten()
                    .any(|&(own_id, reported)| own_id == leader && reported == leader);
                if leader_confirms {
                    return Ok(leader);
                }
            }
            deadline
                .tick(format!("(own id, leader) per member: {reports:?}"))
                .await?;
        }
    }

    /// The member the live members agree is the leader.
    pub async fn leader_member(&mut self) -> Result<&mut Member> {
        let leader = self.wait_leader().await?;
        self.members_mut()
            .iter_mut()
            .find(|m| m.id == leader)
            .ok_or_else(|| anyhow!("leader id {leader} is not the id of any member"))
    }

    /// A live member that is not the leader (waits for a leader first).
    pub async fn follower(&mut self) -> Result<&Member> {
        let leader = self.wait_leader().await?;
        self.members()
            .iter()
            .find(|m| m.expected_running() && m.id != leader)
            .ok_or_else(|| anyhow!("no live follower (leader is {leader})"))
    }
}
