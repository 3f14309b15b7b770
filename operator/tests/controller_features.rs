//! The reconciler's scheduled backups and solo recovery against a scripted API
//! server: what is called, which events go out, what status and conditions say
//! (a recovery resumed from its recorded phase, a request acted on once per
//! generation, a refusal that says why).

mod common;

use common::apiserver::{expect, Reply};
use common::raft_cluster;
use common::reconciler::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use raftkv_operator::controller::REQUEUE_IDLE;
use raftkv_operator::crd::{LastSnapshot, RaftCluster, RecoveryPhase, RecoveryStatus};
use raftkv_operator::membership::{MemberReport, RaftMember, Role, Step};
use serde_json::{json, Value};

fn with_snapshots(mut rc: RaftCluster, schedule: &str) -> RaftCluster {
    rc.spec.snapshot = Some(
        serde_json::from_value(json!({"schedule": schedule, "retain": 3})).expect("snapshot spec"),
    );
    rc.metadata.creation_timestamp = Some(Time("2020-01-01T00:00:00Z".parse().unwrap()));
    rc.status.as_mut().unwrap().last_snapshot = Some(LastSnapshot {
        time: "2020-01-01T00:00:01Z".into(),
        scheduled_time: "2020-01-01T00:00:00Z".into(),
        revision: 1,
        size_bytes: 10,
        member: "demo-1".into(),
        file: "demo-20200101T000000Z.snap".into(),
    });
    rc
}

fn with_recovery(mut rc: RaftCluster, generation: i64) -> RaftCluster {
    rc.spec.recovery =
        Some(serde_json::from_value(json!({"solo": {"fromMember": "auto"}})).unwrap());
    rc.metadata.generation = Some(generation);
    rc
}

/// Member 1 alone answers, with data and no leader for two minutes.
fn survivor_only() -> FakeMembers {
    let mut fake = members(&[], &[]);
    fake.observation.membership = None;
    fake.observation.reports.insert(
        0,
        MemberReport {
            role: Role::Candidate,
            term: 1,
            leader: 0,
            not_ready_reason: "no leader".into(),
            millis_since_leader: 120_000,
            ..ready(1, Role::Follower, 0xc1)
        },
    );
    fake
}

fn recovery_status(phase: RecoveryPhase, reset: Vec<u32>) -> RecoveryStatus {
    RecoveryStatus {
        generation: 2,
        phase,
        member: Some(0),
        from_epoch: 0,
        reset,
        reason: "QuorumLost".into(),
        message: "quorum lost".into(),
        since: "2026-01-01T00:00:00Z".into(),
    }
}

fn status_of(seen: &Value) -> &Value {
    &seen["status"]
}

#[tokio::test]
async fn a_due_backup_is_taken_once_and_reported() {
    // Every second, last backup years ago: hundreds of missed ticks, one backup.
    let rc = with_snapshots(initialized(raft_cluster("demo", 3)), "* * * * * *");
    let fake = members(&[1, 2, 3], &[]);
    let mut script = preamble(Some(3), &[0, 1, 2]);
    script.extend([expect("POST", EVENTS, Reply::Echo), status_patch(&rc)]);
    let (action, seen, executed) = run_with(rc, fake, script, |fake| {
        assert_eq!(fake.backups.lock().unwrap().len(), 1, "one backup");
        let take = fake.backups.lock().unwrap()[0].clone();
        assert_eq!(take.ordinal, 1, "a follower writes it");
        assert!(take.file_name.starts_with("demo-20") && take.file_name.ends_with("Z.snap"));
    })
    .await;
    assert!(
        executed.is_empty(),
        "a converged cluster: no membership step"
    );
    assert_eq!(seen[6].body["reason"], "BackupTaken");
    let status = status_of(&seen[7].body);
    assert_eq!(status["lastSnapshot"]["member"], "demo-1");
    assert_eq!(status["lastSnapshot"]["revision"], 42);
    assert_eq!(status["lastSnapshot"]["sizeBytes"], 1234);
    assert_ne!(
        status["lastSnapshot"]["scheduledTime"],
        "2020-01-01T00:00:00Z"
    );
    let backup = condition(&seen[7].body, "BackupSucceeded");
    assert_eq!(backup["status"], "True");
    assert_eq!(backup["reason"], "BackupTaken");
    // Woken for the next second's instant, not a minute later.
    assert_ne!(action, Action::requeue(REQUEUE_IDLE));
}

#[tokio::test]
async fn a_failed_backup_says_why_and_keeps_the_last_good_one() {
    let rc = with_snapshots(initialized(raft_cluster("demo", 3)), "0 * * * *");
    let mut fake = members(&[1, 2, 3], &[]);
    fake.backup_error = Some("disk full".into());
    let mut script = preamble(Some(3), &[0, 1, 2]);
    script.extend([expect("POST", EVENTS, Reply::Echo), status_patch(&rc)]);
    let (_, seen, _) = run_with(rc, fake, script, |_| {}).await;
    assert_eq!(seen[6].body["reason"], "BackupFailed");
    assert_eq!(seen[6].body["type"], "Warning");
    let status = status_of(&seen[7].body);
    assert_eq!(
        status["lastSnapshot"]["file"], "demo-20200101T000000Z.snap",
        "the instant stays owed"
    );
    let backup = condition(&seen[7].body, "BackupSucceeded");
    assert_eq!(backup["status"], "False");
    assert!(backup["message"].as_str().unwrap().contains("disk full"));
}

#[tokio::test]
async fn an_invalid_schedule_is_a_condition_and_a_warning_not_a_crash_loop() {
    let mut rc = with_snapshots(initialized(raft_cluster("demo", 3)), "every day at noon");
    rc.spec.snapshot.as_mut().unwrap().time_zone = Some("UTC".into());
    let fake = members(&[1, 2, 3], &[]);
    let mut script = preamble(Some(3), &[0, 1, 2]);
    script.extend([expect("POST", EVENTS, Reply::Echo), status_patch(&rc)]);
    let (_, seen, _) = run_with(rc, fake, script, |fake| {
        assert!(fake.backups.lock().unwrap().is_empty());
    })
    .await;
    assert_eq!(seen[6].body["reason"], "InvalidSchedule");
    assert_eq!(seen[6].body["type"], "Warning");
    let backup = condition(&seen[7].body, "BackupSucceeded");
    assert_eq!(backup["status"], "False");
    assert_eq!(backup["reason"], "InvalidSchedule");
    assert!(backup["message"]
        .as_str()
        .unwrap()
        .contains("every day at noon"));
}

#[tokio::test]
async fn solo_recovery_on_a_healthy_quorum_is_refused_once_per_generation() {
    let rc = with_recovery(initialized(raft_cluster("demo", 3)), 2);
    let mut script = preamble(Some(3), &[0, 1, 2]);
    script.push(pods_list(&[0, 1, 2]));
    script.extend([expect("POST", EVENTS, Reply::Echo), status_patch(&rc)]);
    let (_, seen, executed) = run_with(rc.clone(), members(&[1, 2, 3], &[]), script, |fake| {
        assert!(fake.solo.lock().unwrap().is_empty());
    })
    .await;
    assert!(executed.is_empty(), "nothing changes: {executed:?}");
    assert_eq!(seen[7].body["reason"], "SoloRecovery");
    assert_eq!(seen[7].body["type"], "Warning");
    let status = status_of(&seen[8].body);
    assert_eq!(status["recovery"]["phase"], "Refused");
    assert_eq!(status["recovery"]["generation"], 2);
    let cond = condition(&seen[8].body, "SoloRecovery");
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "QuorumNotLost");
    assert!(cond["message"]
        .as_str()
        .unwrap()
        .contains("quorum is not lost"));
    assert_eq!(status["phase"], "Running");

    // The next reconcile of the same generation: no new event, condition kept.
    let mut again = rc;
    again.status = serde_json::from_value(status.clone()).unwrap();
    let mut script = preamble(Some(3), &[0, 1, 2]);
    script.push(pods_list(&[0, 1, 2]));
    script.push(status_patch(&again));
    let (_, seen, _) = run_with(again, members(&[1, 2, 3], &[]), script, |_| {}).await;
    let cond = condition(&seen[7].body, "SoloRecovery");
    assert_eq!(cond["reason"], "QuorumNotLost");
    assert_eq!(status_of(&seen[7].body)["recovery"]["phase"], "Refused");
}

#[tokio::test]
async fn lost_quorum_is_recorded_before_anything_is_deleted() {
    let mut rc = with_recovery(initialized(raft_cluster("demo", 3)), 2);
    // The members as last seen through a leader: kept while none answers.
    rc.status.as_mut().unwrap().members = (1..=3)
        .map(|id| raftkv_operator::crd::MemberSummary {
            id,
            name: format!("demo-{}", id - 1),
            role: "follower".into(),
            caught_up: true,
        })
        .collect();
    let mut script = preamble(Some(3), &[0, 1, 2]);
    script.push(pods_list(&[]));
    script.extend([expect("POST", EVENTS, Reply::Echo), status_patch(&rc)]);
    let (_, seen, executed) = run_with(rc, survivor_only(), script, |_| {}).await;
    assert!(executed.is_empty());
    let status = status_of(&seen[8].body);
    assert_eq!(status["recovery"]["phase"], "ResettingOthers");
    assert_eq!(status["recovery"]["member"], 0);
    assert_eq!(status["phase"], "Recovering");
    assert_eq!(condition(&seen[8].body, "SoloRecovery")["status"], "True");
    let kept: Vec<u64> = status["members"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["id"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(
        kept,
        vec![1, 2, 3],
        "members last seen: {}",
        status["members"]
    );
}

#[tokio::test]
async fn a_new_recovery_starts_with_no_member_reset_whatever_the_last_one_reset() {
    // The last recovery (generation 1) reset pods 1 and 2 and completed; a
    // new request (generation 2) must reset them again. Status is written as
    // a merge patch: an empty `reset` left out of it kept [1, 2] on the API
    // server, and the new recovery skipped both resets (seen in a journey).
    let mut rc = with_recovery(initialized(raft_cluster("demo", 3)), 2);
    rc.status.as_mut().unwrap().recovery = Some(RecoveryStatus {
        generation: 1,
        ..recovery_status(RecoveryPhase::Completed, vec![1, 2])
    });
    let mut script = preamble(Some(3), &[0, 1, 2]);
    script.push(pods_list(&[]));
    script.extend([expect("POST", EVENTS, Reply::Echo), status_patch(&rc)]);
    let (_, seen, _) = run_with(rc, survivor_only(), script, |_| {}).await;
    let recovery = &status_of(&seen[8].body)["recovery"];
    assert_eq!(recovery["phase"], "ResettingOthers");
    assert!(
        matches!(recovery.get("reset"), Some(v) if v.is_null() || *v == json!([])),
        "the patch leaves the last recovery's resets in place: {recovery}"
    );
}

#[tokio::test]
async fn a_restarted_operator_resumes_resetting_where_status_says() {
    let mut rc = with_recovery(initialized(raft_cluster("demo", 3)), 2);
    rc.status.as_mut().unwrap().recovery =
        Some(recovery_status(RecoveryPhase::ResettingOthers, vec![1]));
    let ok = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
    let mut script = preamble(Some(3), &[0, 1, 2]);
    script.push(pods_list(&[]));
    script.extend([
        expect(
            "DELETE",
            format!("{NS}/persistentvolumeclaims/data-demo-2"),
            Reply::Json(ok.clone()),
        ),
        expect("DELETE", format!("{NS}/pods/demo-2"), Reply::Json(ok)),
        expect("POST", EVENTS, Reply::Echo),
        status_patch(&rc),
    ]);
    let (_, seen, executed) = run_with(rc, survivor_only(), script, |_| {}).await;
    assert!(
        executed.is_empty(),
        "the membership planner waits: {executed:?}"
    );
    let status = status_of(&seen[10].body);
    assert_eq!(status["recovery"]["reset"], json!([1, 2]));
    assert_eq!(status["recovery"]["phase"], "ResettingOthers");
}

#[tokio::test]
async fn recover_solo_is_sent_once_then_the_cluster_grows_back() {
    let mut rc = with_recovery(initialized(raft_cluster("demo", 3)), 2);
    rc.status.as_mut().unwrap().recovery =
        Some(recovery_status(RecoveryPhase::RecoveringSolo, vec![1, 2]));
    let mut fake = survivor_only();
    fake.observation.reports.insert(1, ready(2, Role::Other, 0));
    let mut script = preamble(Some(3), &[0, 1, 2]);
    script.push(pods_list(&[]));
    script.extend([expect("POST", EVENTS, Reply::Echo), status_patch(&rc)]);
    let (_, seen, _) = run_with(rc.clone(), fake, script, |fake| {
        assert_eq!(*fake.solo.lock().unwrap(), vec![0]);
    })
    .await;
    let status = status_of(&seen[8].body).clone();
    assert_eq!(status["recovery"]["phase"], "Growing");
    assert!(status["recovery"]["message"]
        .as_str()
        .unwrap()
        .contains("epoch 1"));

    // Growing: member 1 leads alone; the empty pods are added back as learners.
    let mut growing = rc;
    growing.status = serde_json::from_value(status).unwrap();
    let mut fake = members(&[1], &[2, 3]);
    fake.observation.reports.get_mut(&0).unwrap().epoch = 1;
    let mut script = preamble(Some(3), &[0, 1, 2]);
    script.push(pods_list(&[]));
    script.extend([expect("POST", EVENTS, Reply::Echo), status_patch(&growing)]);
    let (_, seen, executed) = run_with(growing.clone(), fake, script, |fake| {
        assert!(fake.solo.lock().unwrap().is_empty(), "not sent again");
    })
    .await;
    assert_eq!(executed, vec![Step::AddLearner { id: 2, ordinal: 1 }]);
    assert_eq!(status_of(&seen[8].body)["recovery"]["phase"], "Growing");

    // Converged: Completed.
    let mut fake = members(&[1, 2, 3], &[]);
    fake.observation.membership = Some(
        (1..=3)
            .map(|id| RaftMember {
                id,
                is_learner: false,
                name: format!("demo-{}", id - 1),
            })
            .collect(),
    );
    let mut script = preamble(Some(3), &[0, 1, 2]);
    script.push(pods_list(&[]));
    script.extend([expect("POST", EVENTS, Reply::Echo), status_patch(&growing)]);
    let (_, seen, _) = run_with(growing, fake, script, |_| {}).await;
    let status = status_of(&seen[8].body);
    assert_eq!(status["recovery"]["phase"], "Completed");
    assert_eq!(status["phase"], "Running");
    assert_eq!(
        condition(&seen[8].body, "SoloRecovery")["reason"],
        "Completed"
    );
}
