//! The reconciler's scheduled maintenance against a scripted API server: one
//! member call per reconcile, its event, and what `status.maintenance`
//! records.

mod common;

use common::apiserver::{expect, Reply};
use common::raft_cluster;
use common::reconciler::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use raftkv_operator::crd::{DefragmentationRound, MaintenanceStatus, RaftCluster};
use serde_json::json;

fn with_maintenance(mut rc: RaftCluster, maintenance: serde_json::Value) -> RaftCluster {
    rc.spec.maintenance = Some(serde_json::from_value(maintenance).expect("maintenance spec"));
    rc.metadata.creation_timestamp = Some(Time("2020-01-01T00:00:00Z".parse().unwrap()));
    rc
}

#[tokio::test]
async fn a_due_compaction_goes_through_the_leader_and_is_recorded() {
    let rc = with_maintenance(
        initialized(raft_cluster("demo", 3)),
        json!({
            "compaction": {"schedule": "0 0 1 1 *", "retainRevisions": 100},
            "defragmentation": {"schedule": "0 0 1 1 *"}
        }),
    );
    let fake = members(&[1, 2, 3], &[]);
    let mut script = preamble(Some(3), &[0, 1, 2]);
    script.extend([expect("POST", EVENTS, Reply::Echo), status_patch(&rc)]);
    let (_, seen, _) = run_with(rc, fake, script, |fake| {
        assert_eq!(
            *fake.compactions.lock().unwrap(),
            [(0, 100)],
            "through the leader"
        );
        assert!(
            fake.defragmented.lock().unwrap().is_empty(),
            "one member call per reconcile: the compaction first"
        );
    })
    .await;
    assert_eq!(seen[6].body["reason"], "Compacted");
    let last = &seen[7].body["status"]["maintenance"]["lastCompaction"];
    assert_eq!(last["revision"], 900);
    assert!(last["scheduledTime"]
        .as_str()
        .unwrap()
        .ends_with("-01-01T00:00:00Z"));
}

#[tokio::test]
async fn a_defragmentation_round_goes_on_with_the_next_follower() {
    let mut rc = with_maintenance(
        initialized(raft_cluster("demo", 3)),
        json!({"defragmentation": {"schedule": "0 0 1 1 *"}}),
    );
    // This year's round, with pod 1 done; pod 0 leads.
    let year = chrono::Utc::now().format("%Y");
    let started = format!("{year}-01-01T00:00:00Z");
    rc.status.as_mut().unwrap().maintenance = Some(MaintenanceStatus {
        last_compaction: None,
        defragmentation: Some(DefragmentationRound {
            scheduled_time: started.clone(),
            done: vec![1],
            completed_time: None,
        }),
    });
    let fake = members(&[1, 2, 3], &[]);
    let mut script = preamble(Some(3), &[0, 1, 2]);
    script.extend([expect("POST", EVENTS, Reply::Echo), status_patch(&rc)]);
    let (_, seen, _) = run_with(rc, fake, script, |fake| {
        assert_eq!(
            *fake.defragmented.lock().unwrap(),
            [2],
            "the other follower"
        );
    })
    .await;
    assert_eq!(seen[6].body["reason"], "Defragmented");
    let round = &seen[7].body["status"]["maintenance"]["defragmentation"];
    assert_eq!(round["done"], json!([1, 2]));
    assert_eq!(round["scheduledTime"], started.as_str());
    assert!(round.get("completedTime").is_none_or(|c| c.is_null()));
}
