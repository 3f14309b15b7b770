//! The reconciler's rollout phase against a scripted API server: with the
//! StatefulSet on a new template revision, one follower's pod is deleted
//! (never the leader's first), and once only the leader is left on the old
//! template, leadership is moved before anything else happens.

mod common;

use common::apiserver::{expect, Expect, Reply};
use common::raft_cluster;
use common::reconciler::*;
use kube::runtime::controller::Action;
use raftkv_operator::controller::REQUEUE_BUSY;
use serde_json::json;

/// The StatefulSet read, with its controller caught up on revision `demo-new`.
fn sts_on_new_revision() -> Expect {
    let mut sts = sts_json(3);
    sts["metadata"]["generation"] = json!(2);
    sts["status"] = json!({"observedGeneration": 2, "replicas": 3,
                           "updateRevision": "demo-new", "currentRevision": "demo-old"});
    expect("GET", format!("{APPS}/statefulsets/demo"), Reply::Json(sts))
}

/// Pods 0..3, Ready since long ago, on the given revisions.
fn pods_on(revisions: [&str; 3]) -> Expect {
    let pods: Vec<(bool, Option<&str>)> = revisions.iter().map(|r| (true, Some(*r))).collect();
    pod_list(&pods)
}

fn script_with(
    pods: Expect,
    then: Vec<Expect>,
    rc: &raftkv_operator::crd::RaftCluster,
) -> Vec<Expect> {
    let mut script = preamble(Some(3), &[0, 1, 2]);
    script[2] = sts_on_new_revision();
    script.push(pods);
    script.extend(then);
    script.push(status_patch(rc));
    script
}

#[tokio::test]
async fn a_new_template_restarts_a_follower_first() {
    let rc = initialized(raft_cluster("demo", 3));
    let fake = members(&[1, 2, 3], &[]);
    let script = script_with(
        pods_on(["demo-old"; 3]),
        vec![
            expect("POST", EVENTS, Reply::Echo),
            expect(
                "DELETE",
                format!("{NS}/pods/demo-1"),
                Reply::Json(json!({})),
            ),
        ],
        &rc,
    );
    let (action, seen, executed) = run(rc, fake, script).await;
    assert!(executed.is_empty(), "no membership step: {executed:?}");
    assert_eq!(action, Action::requeue(REQUEUE_BUSY));
    assert_eq!(seen[7].body["reason"], "RestartingMember");
    let status = &seen[9].body;
    let rollout = condition(status, "PodsUpToDate");
    assert_eq!(rollout["status"], "False");
    assert_eq!(rollout["reason"], "Restarting");
}

#[tokio::test]
async fn the_leader_hands_over_before_its_pod_is_restarted() {
    let rc = initialized(raft_cluster("demo", 3));
    let fake = members(&[1, 2, 3], &[]);
    let script = script_with(
        pods_on(["demo-old", "demo-new", "demo-new"]),
        vec![expect("POST", EVENTS, Reply::Echo)],
        &rc,
    );
    let (_, seen, _) = run_with(rc, fake, script, |fake| {
        assert_eq!(*fake.moves.lock().unwrap(), vec![(0, 2)]);
    })
    .await;
    assert_eq!(seen[7].body["reason"], "MovingLeader");
    assert_eq!(
        condition(&seen[8].body, "PodsUpToDate")["reason"],
        "MovingLeader"
    );
}

#[tokio::test]
async fn pods_on_the_current_template_are_up_to_date() {
    let rc = initialized(raft_cluster("demo", 3));
    let fake = members(&[1, 2, 3], &[]);
    let script = script_with(pods_on(["demo-new"; 3]), vec![], &rc);
    let (_, seen, _) = run(rc, fake, script).await;
    assert_eq!(condition(&seen[7].body, "PodsUpToDate")["status"], "True");
}
