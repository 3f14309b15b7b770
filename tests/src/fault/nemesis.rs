//! The nemesis: seeded fault schedules, and injecting them into a cluster.
//!
//! A [`Schedule`] is a pure function of its seed: which faults, in which order,
//! the quiet gap before each, how long each is held, and a number that picks the
//! victim among candidates ("the second follower by id"). Who the leader is at
//! that moment depends on timing, so a replay injects the same faults into the
//! same roles, not necessarily into the same member ids, and the workload's
//! interleaving differs: the schedule is deterministic, the run is not.
//!
//! Fault kinds cycle through [`ALL_KINDS`] by seed (schedule `s` with `f` faults
//! gets kinds `s*f .. s*f+f` modulo the list), so any `ceil(14 / f)` consecutive
//! seeds cover every kind. Faults run one at a time and each heals itself
//! (restart, SIGCONT, routes removed, member re-added) before the next gap.

use crate::cluster::Cluster;
use crate::grpc::connect_with;
use anyhow::{anyhow, bail, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

mod replacement;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// `kill -9` the leader, restart it after the hold.
    KillLeader,
    /// Cut the power of every member at once: `kill -9` each and drop what
    /// it had written but not fsynced (see `power_cut`); restart them all
    /// after the hold. Acknowledged writes must all be there.
    PowerLoss,
    /// `kill -9` a follower, restart it after the hold.
    KillFollower,
    /// SIGSTOP the leader for longer than the election timeout, then SIGCONT.
    PauseLeader,
    PauseFollower,
    /// Cut the leader off from every other member.
    IsolateLeader,
    /// Split the members into a minority and a majority (random sides).
    MinoritySplit,
    /// Two groups that cannot reach each other, and one member reaching both.
    Bridge,
    /// Remove a member (the leader for an even pick), kill it, and add a fresh
    /// member with a new id and an empty data dir: learner, then voter.
    ReplaceMember,
    /// MoveLeader to a follower, under load.
    MoveLeader,
    /// Two faults at once: cut the leader off from every other member and
    /// `kill -9` and restart every follower. Restarted followers have
    /// forgotten when they last heard from the leader, so they elect a new
    /// one within an election timeout, while the old leader may still believe
    /// it leads: the window a leader must not renew leases in (issue 17,
    /// finding 2). Held at least [`LEASE_FAULT_HOLD`], so a lease kept
    /// through the old leader runs out on the new leader's side.
    IsolateLeaderRestartFollowers,
    /// Issue 17, finding 5: a follower misses some writes, the other
    /// follower, which acknowledged them, loses its data dir and comes back
    /// under its old id, and the leader is killed. The wiped member must not
    /// vote; it stops and is replaced (see `replacement`).
    WipeFollowerKillLeader,
    /// The clients can reach one follower only: every other member is cut
    /// off from the test process (not from its peers), so every request,
    /// watch and keep-alive goes through that follower and its forwarding.
    ClientsReachOneFollower,
    /// Cut one follower off from the other members and remove another
    /// follower meanwhile, then heal and finish replacing it with a fresh
    /// member (see `replacement`).
    ReplaceMemberWhileFollowerCut,
}

/// The shortest hold of isolate-leader-restart-followers: the new leader's
/// election (up to ~2.5 s after the restart) plus the workloads' 3 s lease
/// TTL.
pub const LEASE_FAULT_HOLD: Duration = Duration::from_secs(6);

/// Every kind, in the order schedules cycle through them.
pub const ALL_KINDS: [FaultKind; 14] = [
    FaultKind::KillLeader,
    FaultKind::PowerLoss,
    FaultKind::WipeFollowerKillLeader,
    FaultKind::IsolateLeaderRestartFollowers,
    FaultKind::IsolateLeader,
    FaultKind::PauseFollower,
    FaultKind::ReplaceMember,
    FaultKind::MinoritySplit,
    FaultKind::PauseLeader,
    FaultKind::MoveLeader,
    FaultKind::Bridge,
    FaultKind::KillFollower,
    FaultKind::ClientsReachOneFollower,
    FaultKind::ReplaceMemberWhileFollowerCut,
];

impl FaultKind {
    pub fn is_partition(self) -> bool {
        matches!(
            self,
            FaultKind::IsolateLeader
                | FaultKind::MinoritySplit
                | FaultKind::Bridge
                | FaultKind::IsolateLeaderRestartFollowers
                | FaultKind::ClientsReachOneFollower
                | FaultKind::ReplaceMemberWhileFollowerCut
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::PowerLoss => "power-loss",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::PauseFollower => "pause-follower",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::MinoritySplit => "minority-split",
            FaultKind::Bridge => "bridge",
            FaultKind::ReplaceMember => "replace-member",
            FaultKind::MoveLeader => "move-leader",
            FaultKind::IsolateLeaderRestartFollowers => "isolate-leader-restart-followers",
            FaultKind::WipeFollowerKillLeader => "wipe-follower-kill-leader",
            FaultKind::ClientsReachOneFollower => "clients-reach-one-follower",
            FaultKind::ReplaceMemberWhileFollowerCut => "replace-member-while-follower-cut",
        }
    }
}

/// One step of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    /// Quiet time before the fault.
    pub gap: Duration,
    /// How long the fault lasts (kills, pauses, partitions).
    pub hold: Duration,
    /// Chooses the victim among the candidates.
    pub pick: u64,
}

/// A seeded list of faults; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub seed: u64,
    pub faults: Vec<Fault>,
}

/// The schedule of `seed` with `faults` faults.
pub fn schedule(seed: u64, faults: usize) -> Schedule {
    let mut rng = StdRng::seed_from_u64(seed);
    let first = (seed % ALL_KINDS.len() as u64) as usize * faults;
    let faults = (0..faults)
        .map(|j| Fault {
            kind: ALL_KINDS[(first + j) % ALL_KINDS.len()],
            gap: Duration::from_millis(rng.random_range(1500..4000)),
            hold: Duration::from_millis(rng.random_range(2500..6000)),
            pick: rng.random_range(0..1000),
        })
        .collect();
    Schedule { seed, faults }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "schedule seed {}:", self.seed)?;
        for (i, fault) in self.faults.iter().enumerate() {
            write!(
                f,
                "\n  {i}: after {:.1}s {} for {:.1}s (pick {})",
                fault.gap.as_secs_f64(),
                fault.kind.name(),
                fault.hold.as_secs_f64(),
                fault.pick
            )?;
        }
        Ok(())
    }
}

/// What the nemesis did during one schedule.
#[derive(Debug, Clone, Default)]
pub struct NemesisLog {
    /// One line per action, with the time since the run started.
    pub lines: Vec<String>,
    /// Faults actually injected, by kind.
    pub injected: Vec<FaultKind>,
    /// Faults skipped (partitions without network namespaces), with the reason.
    pub skipped: Vec<String>,
    /// Faults that could not be completed (e.g. a member could not be re-added).
    pub errors: Vec<String>,
}

/// Injects a schedule's faults into `cluster`.
pub struct Nemesis<'a> {
    cluster: &'a mut Cluster,
    started: Instant,
    /// Members removed from the cluster (never restarted).
    removed: BTreeSet<u64>,
    /// Why partitions are skipped, if they are.
    no_partitions: Option<String>,
    pub log: NemesisLog,
}

impl<'a> Nemesis<'a> {
    pub fn new(cluster: &'a mut Cluster, started: Instant, no_partitions: Option<String>) -> Self {
        Nemesis {
            cluster,
            started,
            removed: BTreeSet::new(),
            no_partitions,
            log: NemesisLog::default(),
        }
    }

    fn note(&mut self, line: String) {
        let line = format!("[{:>7.2}s] {line}", self.started.elapsed().as_secs_f64());
        self.log.lines.push(line);
    }

    /// Run every fault of `schedule` in order, each healed before the next.
    pub async fn run(&mut self, schedule: &Schedule) -> Result<()> {
        for fault in &schedule.faults {
            tokio::time::sleep(fault.gap).await;
            if fault.kind.is_partition() {
                if let Some(reason) = self.no_partitions.clone() {
                    self.note(format!("skip {}: {reason}", fault.kind.name()));
                    self.log
                        .skipped
                        .push(format!("{}: {reason}", fault.kind.name()));
                    continue;
                }
            }
            match self.inject(fault).await {
                Ok(()) => self.log.injected.push(fault.kind),
                Err(err) => {
                    let line = format!("{} failed: {err:#}", fault.kind.name());
                    self.note(line.clone());
                    self.log.errors.push(line);
                    // Leave nothing broken behind for the next fault.
                    self.heal_all()?;
                }
            }
        }
        Ok(())
    }

    /// Undo anything still in effect: routes, pauses, killed (not removed) members.
    pub fn heal_all(&mut self) -> Result<()> {
        if let Some(network) = self.cluster.network() {
            network.heal()?;
        }
        let removed = self.removed.clone();
        for m in self.cluster.members_mut() {
            if removed.contains(&m.id) {
                continue;
            }
            if m.expected_running() {
                m.resume()?;
            } else {
                m.restart()?;
            }
        }
        Ok(())
    }

    /// Voting members that are running and not removed, sorted by id.
    fn live_ids(&self) -> Vec<u64> {
        self.cluster
            .live_ids()
            .into_iter()
            .filter(|id| !self.removed.contains(id))
            .collect()
    }

    async fn leader_and_followers(&mut self) -> Result<(u64, Vec<u64>)> {
        let leader = self.cluster.wait_leader().await?;
        let followers = self
            .live_ids()
            .into_iter()
            .filter(|&id| id != leader)
            .collect();
        Ok((leader, followers))
    }

    async fn inject(&mut self, fault: &Fault) -> Result<()> {
        let name = fault.kind.name();
        match fault.kind {
            FaultKind::KillLeader | FaultKind::KillFollower => {
                let victim = self.victim(fault).await?;
                self.cluster.member_mut(victim).kill9()?;
                self.note(format!("{name}: SIGKILL member {victim:x}"));
                tokio::time::sleep(fault.hold).await;
                self.cluster.member_mut(victim).restart()?;
                self.note(format!("{name}: restarted member {victim:x}"));
            }
            FaultKind::PowerLoss => {
                let ids = self.live_ids();
                let mut lost = 0;
                for &id in &ids {
                    lost += self.cluster.power_cut(id)?;
                }
                let shown: Vec<String> = ids.iter().map(|id| format!("{id:x}")).collect();
                self.note(format!(
                    "{name}: cut the power of {}; {lost} unsynced bytes lost",
                    shown.join(", ")
                ));
                tokio::time::sleep(fault.hold).await;
                for &id in &ids {
                    self.cluster.member_mut(id).restart()?;
                }
                self.note(format!("{name}: restarted {}", shown.join(", ")));
            }
            FaultKind::PauseLeader | FaultKind::PauseFollower => {
                let victim = self.victim(fault).await?;
                self.cluster.member_mut(victim).pause()?;
                self.note(format!("{name}: SIGSTOP member {victim:x}"));
                tokio::time::sleep(fault.hold).await;
                self.cluster.member_mut(victim).resume()?;
                self.note(format!("{name}: SIGCONT member {victim:x}"));
            }
            FaultKind::IsolateLeader
            | FaultKind::MinoritySplit
            | FaultKind::Bridge
            | FaultKind::IsolateLeaderRestartFollowers => {
                let (cuts, other_side) = self.partition_cuts(fault).await?;
                let network = self
                    .cluster
                    .network()
                    .ok_or_else(|| anyhow!("partition without a network of namespaces"))?;
                for &(a, b) in &cuts {
                    network.cut(a, b)?;
                }
                let shown: Vec<String> = cuts.iter().map(|(a, b)| format!("{a}<->{b}")).collect();
                self.note(format!("{name}: cut {}", shown.join(" ")));
                let mut hold_until = Instant::now() + fault.hold;
                if fault.kind == FaultKind::IsolateLeaderRestartFollowers {
                    hold_until = hold_until.max(Instant::now() + LEASE_FAULT_HOLD);
                    for &id in &other_side {
                        let member = self.cluster.member_mut(id);
                        member.kill9()?;
                        member.restart()?;
                    }
                    let shown: Vec<String> =
                        other_side.iter().map(|id| format!("{id:x}")).collect();
                    self.note(format!(
                        "{name}: SIGKILLed and restarted {}",
                        shown.join(", ")
                    ));
                }
                if matches!(
                    fault.kind,
                    FaultKind::IsolateLeader | FaultKind::IsolateLeaderRestartFollowers
                ) {
                    // Evidence that the cut is real: the others elect a new leader.
                    let isolated = cuts.first().map(|&(a, _)| a);
                    let old = self
                        .cluster
                        .members()
                        .iter()
                        .find(|m| Some(m.ports.host) == isolated)
                        .map_or(0, |m| m.id);
                    let majority = self.majority_leader_other_than(old, fault.hold).await;
                    self.note(format!(
                        "{name}: the majority side reports leader {}",
                        majority.map_or("none within the hold".to_string(), |l| format!("{l:x}"))
                    ));
                }
                tokio::time::sleep_until(hold_until.into()).await;
                self.cluster
                    .network()
                    .ok_or_else(|| anyhow!("network gone"))?
                    .heal()?;
                self.note(format!("{name}: healed"));
            }
            FaultKind::ClientsReachOneFollower => {
                let (leader, followers) = self.leader_and_followers().await?;
                let reachable = *pick_from(&followers, fault.pick)?;
                let cut: Vec<u64> = std::iter::once(leader)
                    .chain(followers)
                    .filter(|&id| id != reachable)
                    .collect();
                let network = self
                    .cluster
                    .network()
                    .ok_or_else(|| anyhow!("{name} without a network of namespaces"))?;
                for &id in &cut {
                    network.cut_from_clients(self.cluster.member(id).ports.host)?;
                }
                let shown: Vec<String> = cut.iter().map(|id| format!("{id:x}")).collect();
                self.note(format!(
                    "{name}: clients reach only member {reachable:x}; cut off {}",
                    shown.join(", ")
                ));
                tokio::time::sleep(fault.hold).await;
                self.cluster
                    .network()
                    .ok_or_else(|| anyhow!("network gone"))?
                    .heal()?;
                self.note(format!("{name}: healed"));
            }
            FaultKind::ReplaceMember => self.replace_member(fault).await?,
            FaultKind::ReplaceMemberWhileFollowerCut => {
                self.replace_member_while_follower_cut(fault).await?
            }
            FaultKind::WipeFollowerKillLeader => self.wipe_follower_kill_leader(fault).await?,
            FaultKind::MoveLeader => {
                let (leader, followers) = self.leader_and_followers().await?;
                let target = *pick_from(&followers, fault.pick)?;
                let endpoint = self.cluster.member(leader).client_endpoint();
                let tls = self.cluster.client_tls();
                let mut client = connect_with(&[endpoint], tls, Duration::from_secs(5)).await?;
                let mut last_err = None;
                for _ in 0..5 {
                    match client.move_leader(target).await {
                        Ok(_) => {
                            last_err = None;
                            break;
                        }
                        Err(err) => {
                            last_err = Some(err);
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
                if let Some(err) = last_err {
                    bail!("MoveLeader {leader:x} -> {target:x}: {err}");
                }
                self.note(format!("{name}: moved leadership {leader:x} -> {target:x}"));
                tokio::time::sleep(fault.hold).await;
            }
        }
        Ok(())
    }

    /// Poll the live members until a majority reports a leader other than
    /// `old` (`None` if that does not happen within `limit`).
    async fn majority_leader_other_than(&mut self, old: u64, limit: Duration) -> Option<u64> {
        let until = Instant::now() + limit;
        let ids = self.live_ids();
        while Instant::now() < until {
            let mut votes = std::collections::BTreeMap::<u64, usize>::new();
            for &id in &ids {
                if let Ok(st) = self.cluster.member(id).status().await {
                    if st.leader() != 0 && st.leader() != old {
                        *votes.entry(st.leader()).or_default() += 1;
                    }
                }
            }
            if let Some((&leader, _)) = votes.iter().find(|(_, &n)| n > ids.len() / 2) {
                return Some(leader);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    /// The leader, or the follower `pick` chooses.
    async fn victim(&mut self, fault: &Fault) -> Result<u64> {
        let (leader, followers) = self.leader_and_followers().await?;
        match fault.kind {
            FaultKind::KillLeader | FaultKind::PauseLeader => Ok(leader),
            _ => pick_from(&followers, fault.pick).copied(),
        }
    }

    /// The (a, b) address pairs to cut for a partition fault, and the members
    /// of the second side.
    async fn partition_cuts(
        &mut self,
        fault: &Fault,
    ) -> Result<(Vec<(Ipv4Addr, Ipv4Addr)>, Vec<u64>)> {
        let (leader, followers) = self.leader_and_followers().await?;
        let mut ids = self.live_ids();
        let (side_a, side_b): (Vec<u64>, Vec<u64>) = match fault.kind {
            FaultKind::IsolateLeader | FaultKind::IsolateLeaderRestartFollowers => {
                (vec![leader], followers)
            }
            FaultKind::MinoritySplit => {
                ids.shuffle(&mut StdRng::seed_from_u64(fault.pick));
                let minority = (ids.len() - 1) / 2;
                (
                    ids[..minority.max(1)].to_vec(),
                    ids[minority.max(1)..].to_vec(),
                )
            }
            FaultKind::Bridge => {
                // The bridge member stays connected to both sides.
                let bridge = *pick_from(&ids, fault.pick)?;
                let rest: Vec<u64> = ids.into_iter().filter(|&id| id != bridge).collect();
                let half = rest.len() / 2;
                (rest[..half].to_vec(), rest[half..].to_vec())
            }
            other => bail!("{} is not a partition", other.name()),
        };
        let addr = |id: u64| self.cluster.member(id).ports.host;
        let cuts = side_a
            .iter()
            .flat_map(|&a| side_b.iter().map(move |&b| (a, b)))
            .map(|(a, b)| (addr(a), addr(b)))
            .collect();
        Ok((cuts, side_b))
    }
}

fn pick_from<T>(items: &[T], pick: u64) -> Result<&T> {
    if items.is_empty() {
        bail!("no candidate to pick from");
    }
    Ok(&items[(pick % items.len() as u64) as usize])
}
