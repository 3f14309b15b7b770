//! The `ReconcileFailed` condition a refused reconcile adds to the status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use raftkv_operator::status::{with_reconcile_failure, RECONCILE_FAILED};

fn cond(type_: &str, status: &str, at: Timestamp) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: "R".to_string(),
        message: String::new(),
        observed_generation: Some(1),
        last_transition_time: Time(at),
    }
}

#[test]
fn a_failure_is_added_beside_the_other_conditions() {
    let then: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let now: Timestamp = "2026-01-01T00:05:00Z".parse().unwrap();
    let previous = vec![
        cond("Available", "True", then),
        cond("Degraded", "False", then),
    ];
    let got = with_reconcile_failure(
        &previous,
        "Forbidden",
        "statefulsets is forbidden".into(),
        Some(2),
        now,
    );
    assert_eq!(got.len(), 3);
    assert_eq!(&got[..2], &previous[..]);
    let failed = &got[2];
    assert_eq!(failed.type_, RECONCILE_FAILED);
    assert_eq!(failed.status, "True");
    assert_eq!(failed.reason, "Forbidden");
    assert_eq!(failed.message, "statefulsets is forbidden");
    assert_eq!(failed.observed_generation, Some(2));
    assert_eq!(failed.last_transition_time, Time(now));
}

#[test]
fn a_repeated_failure_replaces_the_older_one_and_keeps_its_transition_time() {
    let then: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let now: Timestamp = "2026-01-01T00:05:00Z".parse().unwrap();
    let previous = vec![
        cond(RECONCILE_FAILED, "True", then),
        cond("Available", "True", then),
    ];
    let got = with_reconcile_failure(&previous, "Forbidden", "again".into(), Some(1), now);
    let failed: Vec<&Condition> = got.iter().filter(|c| c.type_ == RECONCILE_FAILED).collect();
    assert_eq!(
        failed.len(),
        1,
        "one ReconcileFailed condition, not two: {got:?}"
    );
    assert_eq!(failed[0].message, "again");
    assert_eq!(failed[0].last_transition_time, Time(then));
    assert!(got.iter().any(|c| c.type_ == "Available"));
}
