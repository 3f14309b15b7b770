//! Which members a benchmark talks to: all of them, only the leader, or only
//! followers. A single client's latency depends on whether its member is the
//! leader (a follower adds a hop to it), so a fair 1-client comparison of two
//! systems puts the client on the same role in both. The role is read through
//! etcd's Maintenance.Status, so it works against etcd too.

use std::time::Duration;

use anyhow::Context;
use tonic::transport::Channel;

use crate::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::proto::etcdserverpb::StatusRequest;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every endpoint given.
    All,
    /// Only the endpoint of the current leader.
    Leader,
    /// Only endpoints of members that are not the leader.
    Followers,
}

/// The endpoints of `urls` that play the `target` role; an error if none do.
pub async fn select(
    urls: Vec<String>,
    target: Target,
    tls: &Option<tonic::transport::ClientTlsConfig>,
) -> anyhow::Result<Vec<String>> {
    if target == Target::All {
        return Ok(urls);
    }
    let mut chosen = Vec::new();
    for url in &urls {
        let channel = super::connect(url, tls).await?;
        let status = member_status(&channel)
            .await
            .with_context(|| format!("asking {url} for its status"))?;
        let is_leader = status.leader != 0 && status.leader == status.id;
        if is_leader == (target == Target::Leader) {
            chosen.push(url.clone());
        }
    }
    if chosen.is_empty() {
        let role = match target {
            Target::Leader => "the leader",
            _ => "a follower",
        };
        anyhow::bail!("no endpoint among {} is {role}", urls.join(","));
    }
    Ok(chosen)
}

/// What a member says of itself in Maintenance.Status.
pub struct MemberStatus {
    pub id: u64,
    /// 0 when it knows no leader.
    pub leader: u64,
    pub term: u64,
}

pub async fn member_status(channel: &Channel) -> anyhow::Result<MemberStatus> {
    let mut request = tonic::Request::new(StatusRequest {});
    request.set_timeout(Duration::from_secs(2));
    let status = MaintenanceClient::new(channel.clone())
        .status(request)
        .await?
        .into_inner();
    Ok(MemberStatus {
        id: status.header.map_or(0, |h| h.member_id),
        leader: status.leader,
        term: status.raft_term,
    })
}

/// The highest Raft term any of `urls` reports, `None` if none answers. Each
/// election that reaches a vote raises it by one, so the rise over a run
/// counts its elections: a run without faults should see none.
pub async fn highest_term(
    urls: &[String],
    tls: &Option<tonic::transport::ClientTlsConfig>,
) -> Option<u64> {
    let mut highest = None;
    for url in urls {
        let Ok(channel) = super::connect(url, tls).await else {
            continue;
        };
        if let Ok(status) = member_status(&channel).await {
            highest = highest.max(Some(status.term));
        }
    }
    highest
}
