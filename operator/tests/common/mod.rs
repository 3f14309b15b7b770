//! RaftCluster values for the operator's tests.

#![allow(dead_code)] // each test binary uses a different part

pub mod apiserver;
pub mod reconciler;
pub mod world;

use raftkv_operator::crd::{RaftCluster, RaftClusterSpec};

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
