//! The reconciler against a scripted API server: the exact requests for a
//! create, a scale-up step, a scale-down step, status patches, and the
//! finalizer being added and removed. Members are faked (see `operator_executor`
//! in the tests crate for real ones).

mod common;

use common::apiserver::{expect, Reply};
use common::raft_cluster;
use common::reconciler::*;
use kube::runtime::controller::Action;
use raftkv_operator::controller::{FINALIZER, REQUEUE_BLOCKED, REQUEUE_BUSY};
use raftkv_operator::membership::Step;
use serde_json::json;

#[tokio::test]
async fn a_new_raftcluster_first_gets_the_finalizer() {
    let rc = raft_cluster("demo", 3);
    let script = vec![expect(
        "PATCH",
        RC,
        Reply::Json(serde_json::to_value(&rc).unwrap()),
    )];
    let (action, seen, executed) = run(rc, FakeMembers::default(), script).await;
    assert_eq!(action, Action::await_change());
    let patch = seen[0].body.to_string();
    assert!(
        patch.contains(FINALIZER) && patch.contains("/metadata/finalizers"),
        "{patch}"
    );
    assert!(executed.is_empty());
}

#[tokio::test]
async fn create_applies_owned_objects_then_starts_pod_zero() {
    let mut rc = raft_cluster("demo", 3);
    rc.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    let mut script = preamble(None, &[]);
    script.extend([
        expect(
            "PATCH",
            format!("{APPS}/statefulsets/demo{APPLY_QUERY}"),
            Reply::Echo,
        ),
        expect("POST", EVENTS, Reply::Echo),
        status_patch(&rc),
    ]);
    let (action, seen, executed) = run(rc, FakeMembers::default(), script).await;
    assert_eq!(action, Action::requeue(REQUEUE_BUSY));
    assert!(executed.is_empty(), "no Raft step before pod 0 runs");
    assert_eq!(seen[0].body["spec"]["clusterIP"], "None");
    assert_eq!(
        seen[0].body["metadata"]["ownerReferences"][0]["uid"],
        common::UID
    );
    assert_eq!(seen[4].body["spec"]["replicas"], 0, "created at size 0");
    assert_eq!(seen[6].body["spec"]["replicas"], 1, "then one pod");
    assert_eq!(seen[7].body["reason"], "ScalingUp");
    let status = &seen[8].body;
    assert_eq!(status["status"]["phase"], "Pending");
    assert_eq!(
        status["status"]["selector"],
        "app.kubernetes.io/instance=demo,app.kubernetes.io/name=raftkv"
    );
    assert_eq!(condition(status, "Progressing")["reason"], "ScalingUp");
    assert_eq!(condition(status, "Available")["status"], "False");
}

#[tokio::test]
async fn pod_zero_up_is_initialized_and_recorded_in_status() {
    let mut rc = raft_cluster("demo", 1);
    rc.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    let mut fake = members(&[], &[1]);
    fake.observation.membership = None;
    let mut script = preamble(Some(1), &[0]);
    script.extend([expect("POST", EVENTS, Reply::Echo), status_patch(&rc)]);
    let (_, seen, executed) = run(rc, fake, script).await;
    assert_eq!(executed, vec![Step::Initialize]);
    assert_eq!(seen[6].body["reason"], "Initializing");
    // Recorded, so no later reconcile initializes again.
    let status = &seen[7].body["status"];
    assert_eq!(status["initialized"]["clusterId"], "c1");
    assert_eq!(status["initialized"]["clusterToken"], common::UID);
    assert_eq!(status["phase"], "Scaling");
}

#[tokio::test]
async fn scale_up_adds_the_new_pod_as_a_learner_with_an_event() {
    let rc = initialized(raft_cluster("demo", 2));
    let fake = members(&[1], &[2]);
    let mut script = preamble(Some(2), &[0, 1]);
    script.extend([expect("POST", EVENTS, Reply::Echo), status_patch(&rc)]);
    let (action, seen, executed) = run(rc, fake, script).await;
    assert_eq!(executed, vec![Step::AddLearner { id: 2, ordinal: 1 }]);
    assert_eq!(action, Action::requeue(REQUEUE_BUSY));
    assert_eq!(
        seen[4].body["spec"]["replicas"], 2,
        "size kept while applying"
    );
    assert_eq!(seen[6].body["reason"], "AddingLearner");
    assert_eq!(seen[6].body["type"], "Normal");
    let status = &seen[7].body["status"];
    assert_eq!(status["phase"], "Scaling");
    assert_eq!(status["voters"], 1);
    assert_eq!(status["leader"], "demo-0");
    assert_eq!(status["initialized"]["clusterId"], "c1");
}

#[tokio::test]
async fn scale_down_removes_the_member_before_touching_the_statefulset() {
    let rc = initialized(raft_cluster("demo", 2));
    let fake = members(&[1, 2, 3], &[]);
    let mut script = preamble(Some(3), &[0, 1, 2]);
    script.extend([expect("POST", EVENTS, Reply::Echo), status_patch(&rc)]);
    let (_, seen, executed) = run(rc, fake, script).await;
    assert_eq!(executed, vec![Step::RemoveMember { id: 3 }]);
    assert_eq!(
        seen[4].body["spec"]["replicas"], 3,
        "StatefulSet not shrunk yet"
    );
    assert_eq!(seen[6].body["reason"], "RemovingMember");
    assert_eq!(
        condition(&seen[7].body, "Progressing")["reason"],
        "RemovingMember"
    );
}

#[tokio::test]
async fn after_removal_the_statefulset_shrinks_then_the_volume_goes() {
    let rc = initialized(raft_cluster("demo", 2));
    let fake = members(&[1, 2], &[]);
    let mut script = preamble(Some(3), &[0, 1, 2]);
    script.extend([
        expect(
            "PATCH",
            format!("{APPS}/statefulsets/demo{APPLY_QUERY}"),
            Reply::Echo,
        ),
        expect("POST", EVENTS, Reply::Echo),
        status_patch(&rc),
    ]);
    let (_, seen, executed) = run(rc.clone(), fake, script).await;
    assert!(executed.is_empty());
    assert_eq!(seen[6].body["spec"]["replicas"], 2);
    assert_eq!(seen[7].body["reason"], "ScalingDown");

    let mut script = preamble(Some(2), &[0, 1, 2]);
    script.extend([
        expect(
            "DELETE",
            format!("{NS}/persistentvolumeclaims/data-demo-2"),
            Reply::Json(
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            ),
        ),
        expect("POST", EVENTS, Reply::Echo),
        status_patch(&rc),
    ]);
    let (_, seen, _) = run(rc, members(&[1, 2], &[]), script).await;
    assert_eq!(seen[7].body["reason"], "DeletingVolume");
    assert_eq!(seen[8].body["status"]["phase"], "Scaling");
}

#[tokio::test]
async fn an_unhealthy_cluster_refuses_to_shrink_and_says_so() {
    let rc = initialized(raft_cluster("demo", 1));
    let mut fake = members(&[1, 2, 3], &[]);
    fake.observation
        .reports
        .get_mut(&1)
        .unwrap()
        .not_ready_reason = "lagging".into();
    let mut script = preamble(Some(3), &[0, 1, 2]);
    script.push(status_patch(&rc));
    let (action, seen, executed) = run(rc, fake, script).await;
    assert!(executed.is_empty(), "nothing removed: {executed:?}");
    assert_eq!(action, Action::requeue(REQUEUE_BLOCKED));
    let status = &seen[6].body;
    assert_eq!(status["status"]["phase"], "Degraded");
    let degraded = condition(status, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "ShrinkRefusedUnhealthy");
    assert_eq!(status["status"]["readyReplicas"], 2);
}

#[tokio::test]
async fn even_replica_counts_are_warned_about() {
    let rc = initialized(raft_cluster("demo", 2));
    let fake = members(&[1, 2], &[]);
    let mut script = preamble(Some(2), &[0, 1]);
    script.push(status_patch(&rc));
    let (action, seen, _) = run(rc, fake, script).await;
    assert_eq!(
        action,
        Action::requeue(raftkv_operator::controller::REQUEUE_IDLE)
    );
    let status = &seen[6].body;
    assert_eq!(status["status"]["phase"], "Running");
    assert_eq!(
        condition(status, "ReplicaCountWarning")["reason"],
        "EvenReplicas"
    );
    assert_eq!(condition(status, "Available")["status"], "True");
    assert_eq!(condition(status, "Progressing")["status"], "False");
}

#[tokio::test]
async fn deletion_publishes_an_event_and_removes_the_finalizer() {
    let mut rc = initialized(raft_cluster("demo", 3));
    rc.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let echo = serde_json::to_value(&rc).unwrap();
    let script = vec![
        expect("POST", EVENTS, Reply::Echo),
        expect("PATCH", RC, Reply::Json(echo)),
    ];
    let (action, seen, executed) = run(rc, FakeMembers::default(), script).await;
    assert_eq!(action, Action::await_change());
    assert!(executed.is_empty());
    assert_eq!(seen[0].body["reason"], "Deleting");
    let patch = seen[1].body.to_string();
    assert!(
        patch.contains("remove") && patch.contains("/metadata/finalizers/0"),
        "{patch}"
    );
}

#[tokio::test]
async fn with_when_deleted_delete_the_volumes_go_with_the_cluster() {
    let mut rc = initialized(raft_cluster("demo", 3));
    rc.spec.storage.when_deleted = raftkv_operator::crd::VolumeRetention::Delete;
    rc.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let echo = serde_json::to_value(&rc).unwrap();
    let mut script = vec![expect(
        "GET",
        format!("{NS}/persistentvolumeclaims"),
        Reply::Json(pvc_list(&[0, 1, 2])),
    )];
    for o in 0..3 {
        script.push(expect(
            "DELETE",
            format!("{NS}/persistentvolumeclaims/data-demo-{o}"),
            Reply::Json(json!({})),
        ));
    }
    script.extend([
        expect("POST", EVENTS, Reply::Echo),
        expect("PATCH", RC, Reply::Json(echo)),
    ]);
    let (action, seen, _) = run(rc, FakeMembers::default(), script).await;
    assert_eq!(action, Action::await_change());
    assert_eq!(seen[4].body["reason"], "Deleting");
    assert!(
        seen[4].body["note"]
            .as_str()
            .is_some_and(|n| n.contains("3 member volumes deleted")),
        "{}",
        seen[4].body
    );
}
