//! Cron schedules read in an IANA time zone, evaluated against an injected
//! `now`: when a scheduled backup, compaction or defragmentation is due.
//!
//! The rule that makes a missed schedule harmless: the instant due is the
//! *latest* scheduled instant at or before `now` that is after the last one
//! handled. Ten ticks missed while the operator was down are one instant, the
//! newest, so the work is done once on return, not ten times.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

/// A parsed cron pattern (`spec.snapshot.schedule`, a maintenance schedule)
/// and its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

/// Why a schedule cannot be used (reported as a condition, never a crash).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("schedule {pattern:?} is not a cron pattern: {reason}")]
    Pattern { pattern: String, reason: String },
    #[error("time zone {0:?} is not an IANA zone name (e.g. UTC, Europe/Berlin)")]
    Zone(String),
}

impl Schedule {
    /// `pattern`: 5 fields, or 6 with leading seconds. `zone`: IANA name, UTC when `None`.
    pub fn parse(pattern: &str, zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let zone = match zone.map(str::trim).filter(|z| !z.is_empty()) {
            None => Tz::UTC,
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| ScheduleError::Zone(name.to_string()))?,
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(pattern)
            .map_err(|e| ScheduleError::Pattern {
                pattern: pattern.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Schedule { cron, zone })
    }

    /// The latest scheduled instant at or before `now`, if there is one.
    pub fn latest_at_or_before(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&now.with_timezone(&self.zone), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The first scheduled instant after `now`.
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&now.with_timezone(&self.zone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The instant due now, if any: the latest one at or before `now` that is
    /// after `handled` (the last instant handled), or, before the first, after
    /// `floor` (when the cluster was created).
    pub fn due(
        &self,
        handled: Option<DateTime<Utc>>,
        floor: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let latest = self.latest_at_or_before(now)?;
        let after = handled.unwrap_or(floor);
        (latest > after).then_some(latest)
    }
}
