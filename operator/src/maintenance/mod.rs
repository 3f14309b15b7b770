//! Scheduled maintenance of a RaftCluster (`spec.maintenance`): compaction
//! discards old history, defragmentation gives its space back. What is due
//! and on which member ([`plan_maintenance`], pure), and the member calls
//! ([`executor`]).
//!
//! Compaction is one call on the leader, replicated through Raft like a
//! write: it keeps `retainRevisions` revisions of history. Defragmentation
//! is local to each member and makes it slow to answer while it runs, so a
//! round takes one member per step, only while every member is ready (a
//! member busy defragmenting must never be what costs the quorum), the
//! followers first and the leader last. A round the operator could not
//! finish (a member not ready) waits, and a newer scheduled instant starts a
//! new round. Both follow [`crate::cron`]'s rule: ticks missed while the
//! operator was down are done once.
//!
//! Nothing runs while solo recovery holds the members (the controller
//! does not call the planner then).

pub mod executor;

use crate::crd::{MaintenanceSpec, MaintenanceStatus};
use crate::cron::{Schedule, ScheduleError};
use crate::membership::{MemberReport, Role};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// What the maintenance planner decides from.
#[derive(Debug, Clone)]
pub struct MaintenanceInput<'a> {
    pub spec: &'a MaintenanceSpec,
    /// `status.maintenance`.
    pub status: Option<&'a MaintenanceStatus>,
    /// When the RaftCluster was created: nothing is owed for instants before it.
    pub created: DateTime<Utc>,
    pub now: DateTime<Utc>,
    /// Reports by pod ordinal of the members that answered.
    pub reports: &'a BTreeMap<u32, MemberReport>,
}

/// The maintenance planner's answer: at most one member call per reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaintenancePlan {
    /// A schedule or the time zone is unusable.
    Invalid(ScheduleError),
    /// Nothing due; the next scheduled instant, to requeue for.
    Idle { next: Option<DateTime<Utc>> },
    /// Compact through the leader at `leader`, keeping `retain` revisions.
    Compact {
        due: DateTime<Utc>,
        leader: u32,
        retain: u64,
    },
    /// Defragment the member at `ordinal`; `done` are this round's members
    /// already defragmented.
    Defragment {
        due: DateTime<Utc>,
        ordinal: u32,
        done: Vec<u32>,
    },
    /// Every member of the round is defragmented.
    FinishDefragmentation { due: DateTime<Utc>, done: Vec<u32> },
    /// Something is due but cannot be done now; why.
    Wait(String),
}

fn parse_time(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn schedule(pattern: &str, spec: &MaintenanceSpec) -> Result<Schedule, ScheduleError> {
    Schedule::parse(pattern, spec.time_zone.as_deref())
}

/// Decide the maintenance step due now, if any: a compaction before a
/// defragmentation step (it is one cheap call, and a defragmentation after
/// it gives more space back).
pub fn plan_maintenance(input: &MaintenanceInput<'_>) -> MaintenancePlan {
    let spec = input.spec;
    let parsed = |pattern: Option<&String>| pattern.map(|p| schedule(p, spec)).transpose();
    let compaction = match parsed(spec.compaction.as_ref().map(|c| &c.schedule)) {
        Ok(s) => s,
        Err(e) => return MaintenancePlan::Invalid(e),
    };
    let defragmentation = match parsed(spec.defragmentation.as_ref().map(|d| &d.schedule)) {
        Ok(s) => s,
        Err(e) => return MaintenancePlan::Invalid(e),
    };
    let status = input.status.cloned().unwrap_or_default();

    if let (Some(schedule), Some(c)) = (&compaction, &spec.compaction) {
        let handled = status
            .last_compaction
            .as_ref()
            .and_then(|l| parse_time(&l.scheduled_time));
        if let Some(due) = schedule.due(handled, input.created, input.now) {
            return match leader(input.reports) {
                Some(leader) => MaintenancePlan::Compact {
                    due,
                    leader,
                    retain: c.retain_revisions,
                },
                None => MaintenancePlan::Wait("compaction waits for a leader".into()),
            };
        }
    }

    if let Some(schedule) = &defragmentation {
        let round = status.defragmentation.as_ref();
        let started = round.and_then(|r| parse_time(&r.scheduled_time));
        let active = match schedule.due(started, input.created, input.now) {
            // A new instant starts a new round, even over an unfinished one.
            Some(due) => Some((due, Vec::new())),
            None => round
                .filter(|r| r.completed_time.is_none())
                .and_then(|r| Some((started?, r.done.clone()))),
        };
        if let Some((due, done)) = active {
            return defragmentation_step(input.reports, due, done);
        }
    }

    let next = [compaction, defragmentation]
        .into_iter()
        .flatten()
        .filter_map(|s| s.next_after(input.now))
        .min();
    MaintenancePlan::Idle { next }
}

/// The leader's ordinal, if a member that says it leads is ready.
fn leader(reports: &BTreeMap<u32, MemberReport>) -> Option<u32> {
    reports
        .iter()
        .filter(|(_, r)| r.role == Role::Leader && r.is_ready())
        .max_by_key(|(_, r)| r.term)
        .map(|(&ord, _)| ord)
}

fn defragmentation_step(
    reports: &BTreeMap<u32, MemberReport>,
    due: DateTime<Utc>,
    done: Vec<u32>,
) -> MaintenancePlan {
    let members: BTreeMap<u32, &MemberReport> = reports
        .iter()
        .filter(|(_, r)| r.cluster_id != 0)
        .map(|(&ord, r)| (ord, r))
        .collect();
    if members.is_empty() {
        return MaintenancePlan::Wait("defragmentation waits for a member to answer".into());
    }
    let next = members
        .iter()
        .filter(|(ord, _)| !done.contains(ord))
        .min_by_key(|(&ord, r)| (r.role == Role::Leader, ord))
        .map(|(&ord, _)| ord);
    let Some(ordinal) = next else {
        return MaintenancePlan::FinishDefragmentation { due, done };
    };
    let not_ready: Vec<u32> = members
        .iter()
        .filter(|(_, r)| !r.is_ready())
        .map(|(&ord, _)| ord)
        .collect();
    if !not_ready.is_empty() || leader(reports).is_none() {
        return MaintenancePlan::Wait(format!(
            "defragmentation waits for every member to be ready (not ready: {not_ready:?})"
        ));
    }
    MaintenancePlan::Defragment { due, ordinal, done }
}
