//! The maintenance planner as tables: compaction through the leader when
//! due, defragmentation rounds one member at a time (followers first, the
//! leader last, only while every member is ready), missed ticks done once,
//! a newer instant starting a new round, bad schedules as errors.

mod common;

use chrono::{DateTime, Utc};
use common::member_report as report;
use raftkv_operator::crd::{
    DefragmentationRound, LastCompaction, MaintenanceSpec, MaintenanceStatus,
};
use raftkv_operator::maintenance::{plan_maintenance, MaintenanceInput, MaintenancePlan};
use raftkv_operator::membership::{MemberReport, Role};
use std::collections::BTreeMap;

fn at(t: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
}

fn spec(value: serde_json::Value) -> MaintenanceSpec {
    serde_json::from_value(value).unwrap()
}

/// Pods 0..3: member 1 (pod 0) leads, all ready.
fn healthy() -> BTreeMap<u32, MemberReport> {
    BTreeMap::from([
        (0, report(1, Role::Leader, true)),
        (1, report(2, Role::Follower, true)),
        (2, report(3, Role::Follower, true)),
    ])
}

fn plan(
    spec: &MaintenanceSpec,
    status: Option<&MaintenanceStatus>,
    reports: &BTreeMap<u32, MemberReport>,
    now: &str,
) -> MaintenancePlan {
    plan_maintenance(&MaintenanceInput {
        spec,
        status,
        created: at("2026-03-01T00:00:00Z"),
        now: at(now),
        reports,
    })
}

fn round(due: &str, done: &[u32], completed: Option<&str>) -> MaintenanceStatus {
    MaintenanceStatus {
        last_compaction: None,
        defragmentation: Some(DefragmentationRound {
            scheduled_time: due.to_string(),
            done: done.to_vec(),
            completed_time: completed.map(String::from),
        }),
    }
}

#[test]
fn compaction_is_due_once_per_instant_through_the_leader() {
    let spec = spec(
        serde_json::json!({"compaction": {"schedule": "*/5 * * * *", "retainRevisions": 1000}}),
    );
    let reports = healthy();
    assert_eq!(
        plan(&spec, None, &reports, "2026-03-10T09:07:00Z"),
        MaintenancePlan::Compact {
            due: at("2026-03-10T09:05:00Z"),
            leader: 0,
            retain: 1000
        }
    );
    let done = MaintenanceStatus {
        last_compaction: Some(LastCompaction {
            scheduled_time: "2026-03-10T09:05:00Z".into(),
            time: "2026-03-10T09:07:00Z".into(),
            revision: 4000,
        }),
        defragmentation: None,
    };
    assert_eq!(
        plan(&spec, Some(&done), &reports, "2026-03-10T09:08:00Z"),
        MaintenancePlan::Idle {
            next: Some(at("2026-03-10T09:10:00Z"))
        }
    );
    // Without a ready leader it waits.
    let mut leaderless = reports.clone();
    leaderless.get_mut(&0).unwrap().not_ready_reason = "no quorum".into();
    assert!(matches!(
        plan(&spec, Some(&done), &leaderless, "2026-03-10T09:11:00Z"),
        MaintenancePlan::Wait(_)
    ));
}

#[test]
fn a_defragmentation_round_takes_the_followers_first_and_the_leader_last() {
    let spec = spec(serde_json::json!({"defragmentation": {"schedule": "0 3 * * *"}}));
    // The leader is pod 1 here, so ordinal order alone would be wrong.
    let reports = BTreeMap::from([
        (0, report(1, Role::Follower, true)),
        (1, report(2, Role::Leader, true)),
        (2, report(3, Role::Follower, true)),
    ]);
    let due = "2026-03-10T03:00:00Z";
    let mut status: Option<MaintenanceStatus> = None;
    let mut order = Vec::new();
    for _ in 0..3 {
        match plan(&spec, status.as_ref(), &reports, "2026-03-10T03:00:30Z") {
            MaintenancePlan::Defragment {
                due: d,
                ordinal,
                mut done,
            } => {
                assert_eq!(d, at(due));
                order.push(ordinal);
                done.push(ordinal);
                status = Some(round(due, &done, None));
            }
            other => panic!("expected a member to defragment, got {other:?}"),
        }
    }
    assert_eq!(order, [0, 2, 1]);
    assert_eq!(
        plan(&spec, status.as_ref(), &reports, "2026-03-10T03:00:40Z"),
        MaintenancePlan::FinishDefragmentation {
            due: at(due),
            done: vec![0, 2, 1]
        }
    );
    let finished = round(due, &[0, 2, 1], Some("2026-03-10T03:00:41Z"));
    assert_eq!(
        plan(&spec, Some(&finished), &reports, "2026-03-10T04:00:00Z"),
        MaintenancePlan::Idle {
            next: Some(at("2026-03-11T03:00:00Z"))
        }
    );
}

#[test]
fn defragmentation_waits_while_any_member_is_not_ready() {
    let spec = spec(serde_json::json!({"defragmentation": {"schedule": "0 3 * * *"}}));
    let mut reports = healthy();
    reports.get_mut(&2).unwrap().not_ready_reason = "catching up".into();
    let status = round("2026-03-10T03:00:00Z", &[1], None);
    match plan(&spec, Some(&status), &reports, "2026-03-10T03:05:00Z") {
        MaintenancePlan::Wait(why) => assert!(why.contains("[2]"), "{why}"),
        other => panic!("expected a wait, got {other:?}"),
    }
}

#[test]
fn missed_ticks_are_one_round_and_a_newer_instant_restarts_an_unfinished_one() {
    let spec = spec(serde_json::json!({"defragmentation": {"schedule": "0 * * * *"}}));
    let reports = healthy();
    // Down from 03:30 to 07:10: one round, for 07:00.
    let old = round(
        "2026-03-10T03:00:00Z",
        &[1, 2, 0],
        Some("2026-03-10T03:01:00Z"),
    );
    assert_eq!(
        plan(&spec, Some(&old), &reports, "2026-03-10T07:10:00Z"),
        MaintenancePlan::Defragment {
            due: at("2026-03-10T07:00:00Z"),
            ordinal: 1,
            done: vec![]
        }
    );
    // A round stuck at 07:00 with pod 1 done continues until 08:00 ...
    let stuck = round("2026-03-10T07:00:00Z", &[1], None);
    assert_eq!(
        plan(&spec, Some(&stuck), &reports, "2026-03-10T07:30:00Z"),
        MaintenancePlan::Defragment {
            due: at("2026-03-10T07:00:00Z"),
            ordinal: 2,
            done: vec![1]
        }
    );
    // ... when a new round starts over.
    assert_eq!(
        plan(&spec, Some(&stuck), &reports, "2026-03-10T08:00:05Z"),
        MaintenancePlan::Defragment {
            due: at("2026-03-10T08:00:00Z"),
            ordinal: 1,
            done: vec![]
        }
    );
}

#[test]
fn nothing_is_owed_before_the_cluster_existed_and_bad_schedules_are_errors() {
    let spec_ok = spec(serde_json::json!({"defragmentation": {"schedule": "0 3 * * *"}}));
    assert_eq!(
        plan(&spec_ok, None, &healthy(), "2026-03-01T02:00:00Z"),
        MaintenancePlan::Idle {
            next: Some(at("2026-03-01T03:00:00Z"))
        }
    );
    let bad =
        spec(serde_json::json!({"compaction": {"schedule": "every day", "retainRevisions": 10}}));
    assert!(matches!(
        plan(&bad, None, &healthy(), "2026-03-10T03:00:00Z"),
        MaintenancePlan::Invalid(_)
    ));
    let zone = spec(
        serde_json::json!({"timeZone": "Mars/Olympus", "defragmentation": {"schedule": "0 3 * * *"}}),
    );
    assert!(matches!(
        plan(&zone, None, &healthy(), "2026-03-10T03:00:00Z"),
        MaintenancePlan::Invalid(_)
    ));
}
