//! The backup schedule and planner as tables: due instants with an injected
//! clock, missed ticks collapsing into one backup, time zones, bad input as
//! errors, who writes the backup, and what retention deletes.

mod common;

use chrono::{DateTime, TimeZone, Utc};
use common::member_report as report;
use raftkv_operator::crd::{LastSnapshot, SnapshotSpec};
use raftkv_operator::membership::{MemberReport, Role};
use raftkv_operator::snapshots::schedule::is_scheduled_backup_of;
use raftkv_operator::snapshots::{
    backup_file_name, plan_backup, plan_pruning, BackupInput, BackupPlan, Schedule, ScheduleError,
    TakeBackup,
};
use std::collections::BTreeMap;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn due(pattern: &str, zone: Option<&str>, handled: Option<&str>, now: &str) -> Option<String> {
    let floor = t("2026-01-01T00:00:00Z");
    Schedule::parse(pattern, zone)
        .expect("valid schedule")
        .due(handled.map(t), floor, t(now))
        .map(|d| d.to_rfc3339())
}

#[test]
fn a_daily_schedule_is_due_at_its_instant_and_not_before() {
    let handled = Some("2026-03-09T03:00:00+00:00");
    let rows = [
        ("2026-03-10T02:59:59Z", None),
        ("2026-03-10T03:00:00Z", Some("2026-03-10T03:00:00+00:00")),
        ("2026-03-10T07:30:00Z", Some("2026-03-10T03:00:00+00:00")),
    ];
    for (now, expected) in rows {
        assert_eq!(
            due("0 3 * * *", None, handled, now).as_deref(),
            expected,
            "now {now}"
        );
    }
    // Once the 03:00 instant is handled, nothing is due until tomorrow's.
    assert_eq!(
        due(
            "0 3 * * *",
            None,
            Some("2026-03-10T03:00:00Z"),
            "2026-03-10T23:59:59Z"
        ),
        None
    );
}

#[test]
fn missed_ticks_give_one_backup_for_the_latest_instant() {
    // Every 5 minutes; the operator was down from 10:00 to 11:02: 12 ticks missed.
    let first = due(
        "*/5 * * * *",
        None,
        Some("2026-03-10T10:00:00Z"),
        "2026-03-10T11:02:00Z",
    );
    assert_eq!(first.as_deref(), Some("2026-03-10T11:00:00+00:00"));
    // Taking it handles every missed tick: nothing more is due right after.
    let again = due(
        "*/5 * * * *",
        None,
        first.as_deref(),
        "2026-03-10T11:02:30Z",
    );
    assert_eq!(again, None);
}

#[test]
fn no_backup_is_owed_for_instants_before_the_cluster_existed() {
    let schedule = Schedule::parse("0 * * * *", None).unwrap();
    let created = t("2026-03-10T10:07:00Z");
    assert_eq!(schedule.due(None, created, t("2026-03-10T10:30:00Z")), None);
    assert_eq!(
        schedule.due(None, created, t("2026-03-10T11:00:05Z")),
        Some(t("2026-03-10T11:00:00Z"))
    );
}

#[test]
fn schedules_are_read_in_their_time_zone_across_daylight_saving() {
    // 03:00 in Berlin is 02:00 UTC in winter (CET) and 01:00 UTC in summer (CEST).
    let rows = [
        (
            "Europe/Berlin",
            "2026-01-15T12:00:00Z",
            "2026-01-15T02:00:00+00:00",
        ),
        (
            "Europe/Berlin",
            "2026-07-15T12:00:00Z",
            "2026-07-15T01:00:00+00:00",
        ),
        (
            "America/New_York",
            "2026-01-15T12:00:00Z",
            "2026-01-15T08:00:00+00:00",
        ),
        ("UTC", "2026-01-15T12:00:00Z", "2026-01-15T03:00:00+00:00"),
    ];
    for (zone, now, expected) in rows {
        assert_eq!(
            due("0 3 * * *", Some(zone), Some("2026-01-01T00:00:00Z"), now).as_deref(),
            Some(expected),
            "{zone} at {now}"
        );
    }
    // No zone means UTC.
    assert_eq!(
        due(
            "0 3 * * *",
            None,
            Some("2026-01-01T00:00:00Z"),
            "2026-01-15T12:00:00Z"
        )
        .as_deref(),
        Some("2026-01-15T03:00:00+00:00")
    );
}

#[test]
fn a_seconds_field_allows_second_level_schedules() {
    let schedule = Schedule::parse("*/2 * * * * *", None).unwrap();
    assert_eq!(
        schedule.next_after(t("2026-03-10T10:00:01Z")),
        Some(t("2026-03-10T10:00:02Z"))
    );
    assert_eq!(
        schedule.latest_at_or_before(t("2026-03-10T10:00:03Z")),
        Some(t("2026-03-10T10:00:02Z"))
    );
}

#[test]
fn bad_patterns_and_zones_are_errors_not_panics() {
    assert!(matches!(
        Schedule::parse("every day", None),
        Err(ScheduleError::Pattern { .. })
    ));
    assert!(matches!(
        Schedule::parse("61 * * * *", None),
        Err(ScheduleError::Pattern { .. })
    ));
    assert_eq!(
        Schedule::parse("0 3 * * *", Some("Mars/Olympus")).unwrap_err(),
        ScheduleError::Zone("Mars/Olympus".into())
    );
}

#[test]
fn backup_names_sort_by_time_and_are_recognised() {
    let a = backup_file_name("demo", t("2026-03-10T09:05:00Z"));
    let b = backup_file_name("demo", t("2026-03-10T10:00:00Z"));
    let c = backup_file_name("demo", t("2026-12-01T00:00:00Z"));
    assert_eq!(a, "demo-20260310T090500Z.snap");
    assert!(a < b && b < c);
    assert!(is_scheduled_backup_of("demo", &a));
    assert!(!is_scheduled_backup_of("demo", "demo-manual.snap"));
    assert!(!is_scheduled_backup_of("dem", &a));
    assert!(!is_scheduled_backup_of("demo-2", &a));
}

fn spec(schedule: &str) -> SnapshotSpec {
    serde_json::from_value(serde_json::json!({ "schedule": schedule })).unwrap()
}

#[test]
fn the_planner_takes_a_due_backup_from_a_ready_follower() {
    let spec = spec("0 * * * *");
    let mut reports = BTreeMap::from([
        (0, report(1, Role::Leader, true)),
        (1, report(2, Role::Follower, false)),
        (2, report(3, Role::Follower, true)),
    ]);
    let last = LastSnapshot {
        time: "2026-03-10T09:00:01Z".into(),
        scheduled_time: "2026-03-10T09:00:00Z".into(),
        revision: 5,
        size_bytes: 100,
        member: "demo-2".into(),
        file: "demo-20260310T090000Z.snap".into(),
    };
    let input = |reports: &BTreeMap<u32, MemberReport>, now: &str| {
        plan_backup(&BackupInput {
            cluster: "demo",
            spec: &spec,
            last: Some(&last),
            created: t("2026-01-01T00:00:00Z"),
            now: t(now),
            reports,
        })
    };
    assert_eq!(
        input(&reports, "2026-03-10T09:59:00Z"),
        BackupPlan::Idle {
            next: Some(t("2026-03-10T10:00:00Z"))
        }
    );
    assert_eq!(
        input(&reports, "2026-03-10T10:00:01Z"),
        BackupPlan::Take(TakeBackup {
            due: t("2026-03-10T10:00:00Z"),
            ordinal: 2,
            file_name: "demo-20260310T100000Z.snap".into(),
        })
    );
    // Only the leader ready: the leader writes it.
    reports.get_mut(&2).unwrap().not_ready_reason = "lagging".into();
    assert!(matches!(
        input(&reports, "2026-03-10T10:00:01Z"),
        BackupPlan::Take(TakeBackup { ordinal: 0, .. })
    ));
    // Nobody ready: wait (the instant stays owed).
    reports.get_mut(&0).unwrap().not_ready_reason = "no leader".into();
    assert_eq!(
        input(&reports, "2026-03-10T10:00:01Z"),
        BackupPlan::NoHealthyMember {
            due: t("2026-03-10T10:00:00Z")
        }
    );
}

#[test]
fn an_invalid_schedule_is_reported_by_the_planner() {
    let mut bad = spec("0 3 * * *");
    bad.time_zone = Some("Nowhere/Land".into());
    let plan = plan_backup(&BackupInput {
        cluster: "demo",
        spec: &bad,
        last: None,
        created: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        now: Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
        reports: &BTreeMap::new(),
    });
    assert!(
        matches!(plan, BackupPlan::Invalid(ScheduleError::Zone(_))),
        "{plan:?}"
    );
}

#[test]
fn retention_keeps_the_newest_and_touches_nothing_else() {
    let names: Vec<String> = ["09", "10", "11", "12"]
        .iter()
        .map(|h| format!("demo-20260310T{h}0000Z.snap"))
        .collect();
    // Per-member volumes: backups spread over members; a hand-made file stays.
    let listings = BTreeMap::from([
        (
            0,
            vec![
                names[0].clone(),
                names[2].clone(),
                "demo-manual.snap".into(),
            ],
        ),
        (1, vec![names[1].clone(), names[3].clone()]),
        (2, vec!["other-20260310T090000Z.snap".into()]),
    ]);
    let mut pruned = plan_pruning("demo", 2, &listings);
    pruned.sort();
    assert_eq!(pruned, vec![(0, names[0].clone()), (1, names[1].clone())]);

    // A shared volume: every member lists the same files; each old one is
    // deleted wherever listed (the second delete finds it gone, which is fine).
    let shared: BTreeMap<u32, Vec<String>> = (0..2).map(|o| (o, names.clone())).collect();
    let pruned = plan_pruning("demo", 3, &shared);
    assert_eq!(pruned, vec![(0, names[0].clone()), (1, names[0].clone())]);
    assert!(plan_pruning("demo", 7, &shared).is_empty());
}
