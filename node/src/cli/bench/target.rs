//! Which members a benchmark talks to: all of them, only the leader, or only
//! followers. A single client's latency depends on whether its member is the
//! leader (a follower adds a hop to it), so a fair 1-client comparison of two
//! systems puts the client on the same role in both. The role is read through
//! etcd's Maintenance.Status, so it works against etcd too.

use anyhow::Context;

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
        let status = MaintenanceClient::new(channel)
            .status(StatusRequest {})
            .await
            .with_context(|| format!("asking {url} for its status"))?
            .into_inner();
        let member = status.header.map_or(0, |h| h.member_id);
        let is_leader = status.leader != 0 && status.leader == member;
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
