//! Linearizability checker for register histories (read / write / compare-and-set).
//!
//! The algorithm is Wing & Gong's search with Lowe's memoization, as Knossos and
//! porcupine use it: build a sequential order one operation at a time, where the
//! next operation may be any not-yet-placed one invoked before the earliest
//! completion among the not-yet-placed ones (it could have taken effect first),
//! and whose answer the sequential register model reproduces. A set of placed
//! operations plus the register value reached is a search state; a state already
//! explored is not explored again, which keeps the search polynomial in practice.
//! Histories are split by key first (P-compositionality: a history is
//! linearizable iff each key's sub-history is), so each search is small.
//!
//! Operations with an unknown outcome complete "at infinity": they may be placed
//! anywhere after their invocation, or never (they did not take effect), and
//! their answer is not checked. Failed operations and reads of unknown outcome
//! constrain nothing and are left out.
//!
//! Why our own code: the Rust crates that check linearizability either test
//! in-process data structures under a model checker (lincheck, over loom) or
//! search interleavings of an actor model without the memoized WGL search and
//! without operations that complete at infinity (stateright's
//! LinearizabilityTester, built for its own model checker, a large dependency).
//! Neither takes a recorded history of thousands of operations with unknown
//! outcomes. This is ~200 lines, tested in `tests/linearizability_checker.rs`
//! on known-good and known-bad histories.
//!
//! When a key's history is not linearizable, [`minimize`] removes operations
//! while it stays non-linearizable, to print a small failing sub-history.

use crate::fault::history::{Outcome, RegisterEntry, RegisterOp, RegisterRet, Value};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

/// Search states explored per key before giving up as inconclusive.
pub const DEFAULT_BUDGET: u64 = 20_000_000;

/// The checker's answer for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyVerdict {
    Linearizable,
    /// Not linearizable; `minimal` is a small sub-history that is not either.
    Violation {
        minimal: Vec<RegisterEntry>,
    },
    /// The search gave up after exploring `explored` states.
    Inconclusive {
        explored: u64,
    },
}

/// The verdict per key, with the number of operations checked.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub keys: BTreeMap<String, (usize, KeyVerdict)>,
}

impl CheckReport {
    pub fn violations(&self) -> Vec<(&String, &Vec<RegisterEntry>)> {
        self.keys
            .iter()
            .filter_map(|(k, (_, v))| match v {
                KeyVerdict::Violation { minimal } => Some((k, minimal)),
                _ => None,
            })
            .collect()
    }

    pub fn inconclusive(&self) -> Vec<&String> {
        self.keys
            .iter()
            .filter(|(_, (_, v))| matches!(v, KeyVerdict::Inconclusive { .. }))
            .map(|(k, _)| k)
            .collect()
    }

    pub fn is_linearizable(&self) -> bool {
        self.keys
            .values()
            .all(|(_, v)| *v == KeyVerdict::Linearizable)
    }
}

/// Check every key's sub-history; a violation is minimized for at most `minimize_for`.
pub fn check_history(
    entries: &[RegisterEntry],
    budget: u64,
    minimize_for: Duration,
) -> CheckReport {
    let mut by_key: BTreeMap<String, Vec<RegisterEntry>> = BTreeMap::new();
    for e in entries {
        by_key.entry(e.key.clone()).or_default().push(e.clone());
    }
    let keys = by_key
        .into_iter()
        .map(|(key, ops)| {
            let verdict = match linearizable(&ops, budget) {
                Ok(true) => KeyVerdict::Linearizable,
                Ok(false) => KeyVerdict::Violation {
                    minimal: minimize(&ops, budget, minimize_for),
                },
                Err(explored) => KeyVerdict::Inconclusive { explored },
            };
            (key, (ops.len(), verdict))
        })
        .collect();
    CheckReport { keys }
}

/// One operation as the search sees it.
#[derive(Debug, Clone, Copy)]
struct SearchOp {
    invoke: u64,
    /// `u64::MAX` when the outcome is unknown.
    complete: u64,
    op: RegisterOp,
    /// `None` when the outcome is unknown.
    ret: Option<RegisterRet>,
}

/// Whether one key's operations are linearizable, starting from an absent key.
/// `Err(explored)` if the search exceeded `budget` states.
pub fn linearizable(entries: &[RegisterEntry], budget: u64) -> Result<bool, u64> {
    let mut ops: Vec<SearchOp> = entries
        .iter()
        .filter_map(|e| match (&e.outcome, e.op) {
            (Outcome::Failed, _) => None,
            (Outcome::Unknown, RegisterOp::Read) => None,
            (Outcome::Unknown, op) => Some(SearchOp {
                invoke: e.invoke,
                complete: u64::MAX,
                op,
                ret: None,
            }),
            (Outcome::Ok(ret), op) => Some(SearchOp {
                invoke: e.invoke,
                complete: e.complete,
                op,
                ret: Some(*ret),
            }),
        })
        .collect();
    ops.sort_by_key(|o| (o.invoke, o.complete));
    // A read of a value nobody wrote needs no search.
    let written: HashSet<Value> = ops
        .iter()
        .filter_map(|o| match o.op {
            RegisterOp::Write(v) | RegisterOp::Cas { new: v, .. } => Some(v),
            RegisterOp::Read => None,
        })
        .collect();
    if ops
        .iter()
        .any(|o| matches!(o.ret, Some(RegisterRet::Read(Some(v))) if !written.contains(&v)))
    {
        return Ok(false);
    }
    search(&ops, budget)
}

/// The register model: the value after `op` from `state`, or `None` if `op`
/// cannot have answered `ret` there.
fn step(state: Option<Value>, op: RegisterOp, ret: Option<RegisterRet>) -> Option<Option<Value>> {
    match (op, ret) {
        (RegisterOp::Read, Some(RegisterRet::Read(seen))) => (seen == state).then_some(state),
        (RegisterOp::Read, _) => None,
        (RegisterOp::Write(v), None | Some(RegisterRet::Written)) => Some(Some(v)),
        (RegisterOp::Write(_), _) => None,
        (RegisterOp::Cas { expect, new }, ret) => {
            let swaps = state == Some(expect);
            match ret {
                None => Some(if swaps { Some(new) } else { state }),
                Some(RegisterRet::Cas(swapped)) if swapped == swaps => {
                    Some(if swaps { Some(new) } else { state })
                }
                Some(_) => None,
            }
        }
    }
}

/// One level of the depth-first search.
struct Frame {
    candidates: Vec<usize>,
    next: usize,
    /// The operation placed to reach this level, and the value before it.
    placed: Option<(usize, Option<Value>)>,
}

fn search(ops: &[SearchOp], budget: u64) -> Result<bool, u64> {
    let required = ops.iter().filter(|o| o.ret.is_some()).count();
    let mut placed = vec![0u64; ops.len().div_ceil(64)];
    let mut placed_required = 0;
    let mut state: Option<Value> = None;
    let mut seen: HashSet<(Vec<u64>, Option<Value>)> = HashSet::new();
    let mut explored = 0u64;
    let mut stack = vec![Frame {
        candidates: candidates(ops, &placed),
        next: 0,
        placed: None,
    }];
    loop {
        if placed_required == required {
            return Ok(true);
        }
        let Some(top) = stack.last_mut() else {
            return Ok(false);
        };
        if top.next < top.candidates.len() {
            let c = top.candidates[top.next];
            top.next += 1;
            explored += 1;
            if explored > budget {
                return Err(explored);
            }
            let Some(after) = step(state, ops[c].op, ops[c].ret) else {
                continue;
            };
            set_bit(&mut placed, c, true);
            if !seen.insert((placed.clone(), after)) {
                set_bit(&mut placed, c, false);
                continue;
            }
            stack.push(Frame {
                candidates: candidates(ops, &placed),
                next: 0,
                placed: Some((c, state)),
            });
            state = after;
            if ops[c].ret.is_some() {
                placed_required += 1;
            }
        } else {
            let frame = stack.pop().expect("stack is not empty");
            if let Some((c, before)) = frame.placed {
                set_bit(&mut placed, c, false);
                state = before;
                if ops[c].ret.is_some() {
                    placed_required -= 1;
                }
            }
        }
    }
}

/// Not-yet-placed operations that may take effect next: invoked before the
/// earliest completion among the not-yet-placed. Operations with a known
/// outcome are tried first, earliest completion first; unknown ones last.
fn candidates(ops: &[SearchOp], placed: &[u64]) -> Vec<usize> {
    let earliest_completion = (0..ops.len())
        .filter(|&i| !bit(placed, i))
        .map(|i| ops[i].complete)
        .min()
        .unwrap_or(u64::MAX);
    let mut out: Vec<usize> = (0..ops.len())
        .take_while(|&i| ops[i].invoke <= earliest_completion)
        .filter(|&i| !bit(placed, i))
        .collect();
    out.sort_by_key(|&i| ops[i].complete);
    out
}

fn bit(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

fn set_bit(bits: &mut [u64], i: usize, on: bool) {
    if on {
        bits[i / 64] |= 1 << (i % 64);
    } else {
        bits[i / 64] &= !(1 << (i % 64));
    }
}

/// A small sub-history of a non-linearizable `entries` that is still not
/// linearizable: chunks of operations are dropped while the rest stays
/// non-linearizable, halving the chunk size down to single operations (delta
/// debugging), for at most `time_limit`.
///
/// Dropping operations blindly would invent violations (drop the write a read
/// saw, and the read sees a value nobody wrote), so every candidate is first
/// closed by [`close`]: then any linearization of the whole history, restricted
/// to the candidate, linearizes the candidate too, and a candidate that is not
/// linearizable proves the whole history is not.
pub fn minimize(
    entries: &[RegisterEntry],
    budget: u64,
    time_limit: Duration,
) -> Vec<RegisterEntry> {
    let started = Instant::now();
    let mut all: Vec<RegisterEntry> = entries
        .iter()
        .filter(|e| {
            !matches!(
                (&e.outcome, e.op),
                (Outcome::Failed, _) | (Outcome::Unknown, RegisterOp::Read)
            )
        })
        .cloned()
        .collect();
    all.sort_by_key(|e| e.invoke);
    let written: HashSet<Value> = all.iter().filter_map(writes).collect();
    let mut keep = all.clone();
    let mut chunk = keep.len().div_ceil(2);
    while chunk >= 1 {
        let mut i = 0;
        while i < keep.len() {
            if started.elapsed() > time_limit {
                return keep;
            }
            let end = (i + chunk).min(keep.len());
            let mut candidate = keep[..i].to_vec();
            candidate.extend_from_slice(&keep[end..]);
            let candidate = close(candidate, &all, &written);
            if candidate.len() < keep.len() && linearizable(&candidate, budget) == Ok(false) {
                keep = candidate;
            } else {
                i += chunk;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2).min(chunk - 1).max(1);
    }
    keep
}

/// The value an operation may write (a write, or a compare-and-set that swapped
/// or whose outcome is unknown).
fn writes(e: &RegisterEntry) -> Option<Value> {
    match (e.op, &e.outcome) {
        (RegisterOp::Write(v), _) => Some(v),
        (RegisterOp::Cas { new, .. }, Outcome::Ok(RegisterRet::Cas(true)) | Outcome::Unknown) => {
            Some(new)
        }
        _ => None,
    }
}

/// `subset` minus every operation that depends on a write no longer in it: a
/// read of its value, a compare-and-set expecting it (repeatedly, as such a
/// compare-and-set writes too); and, once any write is gone, every
/// compare-and-set that did not swap (it may have failed only because of that
/// write). Reads of values nobody in `all` wrote (`written`) stay: they are
/// violations on their own.
fn close(
    mut subset: Vec<RegisterEntry>,
    all: &[RegisterEntry],
    written: &HashSet<Value>,
) -> Vec<RegisterEntry> {
    loop {
        let present: HashSet<Value> = subset.iter().filter_map(writes).collect();
        let missing = |v: Value| written.contains(&v) && !present.contains(&v);
        let before = subset.len();
        subset.retain(|e| match (e.op, &e.outcome) {
            (RegisterOp::Read, Outcome::Ok(RegisterRet::Read(Some(v)))) => !missing(*v),
            (
                RegisterOp::Cas { expect, .. },
                Outcome::Ok(RegisterRet::Cas(true)) | Outcome::Unknown,
            ) => !missing(expect),
            _ => true,
        });
        if subset.len() == before {
            break;
        }
    }
    let writes_in_all = all.iter().filter(|e| writes(e).is_some()).count();
    let writes_kept = subset.iter().filter(|e| writes(e).is_some()).count();
    if writes_kept < writes_in_all {
        subset.retain(|e| !matches!(e.outcome, Outcome::Ok(RegisterRet::Cas(false))));
    }
    subset
}
