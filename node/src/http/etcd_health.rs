//! etcd's `/health` and `/version` on the client port.
//!
//! Load balancers, scripts and probes written for etcd ask a member's client
//! URL for these and read etcd's JSON, so they answer in etcd 3.5's form and
//! with its checks: a raised alarm (unless `?exclude=` names it), no leader
//! (unless `?serializable=true`), then a one-key read, linearizable unless
//! `?serializable=true`. A read refused only for want of credentials still
//! counts as healthy, as in etcd: the member answered.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::RawQuery;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::json_response;
use crate::node::Node;
use crate::node::ETCD_API_VERSION;
use crate::proto::etcdserverpb::AlarmType;

/// How long the health read may take before the member counts as unhealthy.
const HEALTH_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /health[?serializable=true][&exclude=NOSPACE...]`.
pub async fn health(State(node): State<Arc<Node>>, RawQuery(query): RawQuery) -> Response {
    let query = HealthQuery::parse(query.as_deref().unwrap_or(""));
    let reason = match unhealthy_reason(&node, &query).await {
        None => return health_json(StatusCode::OK, "true", ""),
        Some(reason) => reason,
    };
    tracing::debug!("/health: {reason}");
    health_json(StatusCode::SERVICE_UNAVAILABLE, "false", &reason)
}

/// `GET /version`: the server and cluster versions etcd reports.
pub async fn version() -> Response {
    let body = serde_json::json!({
        "etcdserver": ETCD_API_VERSION,
        "etcdcluster": ETCD_API_VERSION,
    });
    json_response(StatusCode::OK, body.to_string())
}

/// What `/health`'s query asks for.
#[derive(Debug, Default, PartialEq)]
struct HealthQuery {
    serializable: bool,
    /// Alarm names (etcd's: `NOSPACE`, `CORRUPT`) not to count.
    excluded: Vec<String>,
}

impl HealthQuery {
    fn parse(query: &str) -> Self {
        let mut parsed = HealthQuery::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "serializable" => parsed.serializable = value == "true",
                "exclude" => parsed.excluded.push(value.to_string()),
                _ => {}
            }
        }
        parsed
    }
}

/// Why the member is unhealthy, in etcd's words, or `None`.
async fn unhealthy_reason(node: &Node, query: &HealthQuery) -> Option<String> {
    match node.alarms() {
        Err(e) => return Some(format!("ALARM UNKNOWN: {}", e.message)),
        Ok(alarms) => {
            for alarm in alarms {
                let name = alarm_name(alarm.alarm);
                if !query.excluded.iter().any(|x| x == name) {
                    return Some(format!("ALARM {name}"));
                }
            }
        }
    }
    if !query.serializable && node.leader().is_none() {
        return Some("RAFT NO LEADER".into());
    }
    if query.serializable {
        // A serializable read is this member's own store: it answers
        // whenever the process does.
        return None;
    }
    match tokio::time::timeout(HEALTH_READ_TIMEOUT, node.read_barrier()).await {
        Err(_) => Some("RANGE ERROR: request timed out".into()),
        Ok(Err(e)) => Some(format!("RANGE ERROR: {}", e.message)),
        Ok(Ok(())) => None,
    }
}

fn alarm_name(alarm: i32) -> &'static str {
    match AlarmType::try_from(alarm) {
        Ok(AlarmType::Nospace) => "NOSPACE",
        Ok(AlarmType::Corrupt) => "CORRUPT",
        _ => "UNKNOWN",
    }
}

fn health_json(status: StatusCode, health: &str, reason: &str) -> Response {
    let body = serde_json::json!({ "health": health, "reason": reason });
    json_response(status, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_reads_serializable_and_every_exclude() {
        assert_eq!(HealthQuery::parse(""), HealthQuery::default());
        assert_eq!(
            HealthQuery::parse("serializable=true&exclude=NOSPACE&exclude=CORRUPT"),
            HealthQuery {
                serializable: true,
                excluded: vec!["NOSPACE".into(), "CORRUPT".into()],
            }
        );
        assert!(!HealthQuery::parse("serializable=false").serializable);
    }
}
