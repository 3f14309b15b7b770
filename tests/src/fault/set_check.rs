//! The set workload's check: every acknowledged append is present at the end,
//! and nothing is present that was never written (or that we were told failed).
//!
//! Appends of unknown outcome may be present or absent; how many made it is
//! reported, not judged.

use crate::fault::history::{Outcome, SetAppend};
use std::collections::{BTreeMap, BTreeSet};

/// What the final read showed, against what was appended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetReport {
    pub acknowledged: usize,
    pub unknown: usize,
    pub failed: usize,
    /// Unknown appends that turned out to be applied.
    pub unknown_present: usize,
    /// Acknowledged appends missing from the final read (lost writes).
    pub lost: Vec<String>,
    /// Keys present that were never appended, or whose append certainly failed,
    /// or whose value is not the one written.
    pub unexpected: Vec<String>,
}

impl SetReport {
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty() && self.unexpected.is_empty()
    }
}

/// Compare the appends with the final read of the set's prefix (key -> value).
pub fn check_set(appends: &[SetAppend], final_read: &BTreeMap<String, String>) -> SetReport {
    let mut report = SetReport::default();
    let mut may_exist = BTreeSet::new();
    for a in appends {
        match a.outcome {
            Outcome::Ok(()) => {
                report.acknowledged += 1;
                may_exist.insert(a.key.as_str());
                if !final_read.contains_key(&a.key) {
                    report.lost.push(a.key.clone());
                }
            }
            Outcome::Unknown => {
                report.unknown += 1;
                may_exist.insert(a.key.as_str());
                if final_read.contains_key(&a.key) {
                    report.unknown_present += 1;
                }
            }
            Outcome::Failed => report.failed += 1,
        }
    }
    for (key, value) in final_read {
        if !may_exist.contains(key.as_str()) || key != value {
            report.unexpected.push(format!("{key} = {value}"));
        }
    }
    report
}
