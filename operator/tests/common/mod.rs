//! RaftCluster values for the operator's tests.

#![allow(dead_code)] // each test binary uses a different part

pub mod apiserver;
pub mod reconciler;
pub mod world;

use raftkv_operator::crd::{RaftCluster, RaftClusterSpec};
use raftkv_operator::membership::{MemberReport, Role};

pub const UID: &str = "4f1c2e3a-0000-4000-8000-000000000001";

/// A RaftCluster as the API server would hand it over (uid, namespace, generation).
pub fn raft_cluster(name: &str, replicas: i32) -> RaftCluster {
    let spec: RaftClusterSpec = serde_json::from_value(serde_json::json!({
        "replicas": replicas,
        "image": "raftkv:test",
    }))
    .expect("spec parses");
    let mut rc = RaftCluster::new(name, spec);
    rc.metadata.namespace = Some("prod".to_string());
    rc.metadata.uid = Some(UID.to_string());
    rc.metadata.generation = Some(1);
    rc.metadata.resource_version = Some("100".to_string());
    rc
}

/// What member `id` reports when it is in cluster 0xc1 (member 1 leads),
/// ready or not.
pub fn member_report(id: u64, role: Role, ready: bool) -> MemberReport {
    MemberReport {
        id,
        role,
        term: 1,
        leader: 1,
        committed_index: 10,
        applied_index: 10,
        last_log_index: 10,
        cluster_id: 0xc1,
        not_ready_reason: if ready { String::new() } else { "x".into() },
        epoch: 0,
        millis_since_leader: 0,
    }
}
