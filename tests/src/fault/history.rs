//! What the workload clients did, as the checkers need it.
//!
//! Every operation is recorded with the time it was invoked, the time it
//! completed and its outcome: `Ok` with what the server answered, `Failed` when
//! it certainly did not take effect (the request never left the client), or
//! `Unknown` (a timeout, a dropped connection, any server error): it may or may
//! not have taken effect, and the checkers must allow both. Calling a timeout
//! "failed" would make the checker wrong, not strict.
//!
//! Register values are `u64`s unique per write (`client << 32 | sequence`), so a
//! read names the write it observed; they are stored as decimal strings.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A register value: `client << 32 | sequence`, unique per write.
pub type Value = u64;

/// The value a workload client writes as its `seq`-th write.
pub fn value_of(client: usize, seq: u32) -> Value {
    ((client as u64) << 32) | seq as u64
}

/// `c<client>.<seq>`: a value as people read it.
pub fn show_value(v: Value) -> String {
    format!("c{}.{}", v >> 32, v & 0xffff_ffff)
}

/// Microseconds since a fixed start, shared by every recorder of one run.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::start()
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<R> {
    Ok(R),
    /// Certainly not applied (the request was never sent).
    Failed,
    /// May or may not have been applied.
    Unknown,
}

/// A register operation on one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterOp {
    /// A linearizable Range of the key.
    Read,
    /// A Put.
    Write(Value),
    /// A Txn: if the value equals `expect`, put `new`.
    Cas { expect: Value, new: Value },
}

/// What the server answered to a register operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterRet {
    Read(Option<Value>),
    Written,
    Cas(bool),
}

/// One register operation of one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterEntry {
    pub client: usize,
    pub key: String,
    pub op: RegisterOp,
    /// Microseconds on the run's [`Clock`].
    pub invoke: u64,
    pub complete: u64,
    pub outcome: Outcome<RegisterRet>,
    /// The store revision in the response header (writes that were acknowledged).
    pub revision: Option<i64>,
    /// The member endpoint the client talked to.
    pub member: String,
}

impl RegisterEntry {
    /// An entry for checker tests: client, key "k", times in microseconds.
    pub fn new(
        client: usize,
        op: RegisterOp,
        invoke: u64,
        complete: u64,
        outcome: Outcome<RegisterRet>,
    ) -> RegisterEntry {
        RegisterEntry {
            client,
            key: "k".to_string(),
            op,
            invoke,
            complete,
            outcome,
            revision: None,
            member: String::new(),
        }
    }
}

impl fmt::Display for RegisterEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            RegisterOp::Read => "read".to_string(),
            RegisterOp::Write(v) => format!("write {}", show_value(v)),
            RegisterOp::Cas { expect, new } => {
                format!("cas {} -> {}", show_value(expect), show_value(new))
            }
        };
        let outcome = match &self.outcome {
            Outcome::Ok(RegisterRet::Read(Some(v))) => format!("ok {}", show_value(*v)),
            Outcome::Ok(RegisterRet::Read(None)) => "ok (absent)".to_string(),
            Outcome::Ok(RegisterRet::Written) => "ok".to_string(),
            Outcome::Ok(RegisterRet::Cas(true)) => "ok (swapped)".to_string(),
            Outcome::Ok(RegisterRet::Cas(false)) => "ok (not swapped)".to_string(),
            Outcome::Failed => "FAILED".to_string(),
            Outcome::Unknown => "UNKNOWN".to_string(),
        };
        write!(
            f,
            "[{:>10.3}s .. {:>10.3}s] client {:>2} {} {op}: {outcome}",
            self.invoke as f64 / 1e6,
            self.complete as f64 / 1e6,
            self.client,
            self.key,
        )?;
        if let Some(rev) = self.revision {
            write!(f, " @rev {rev}")?;
        }
        if !self.member.is_empty() {
            write!(f, " via {}", self.member)?;
        }
        Ok(())
    }
}

/// One append of the set workload: key = value = a name used once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAppend {
    pub key: String,
    pub outcome: Outcome<()>,
    pub revision: Option<i64>,
}

/// A list many tasks append to.
#[derive(Debug)]
pub struct Recorder<T>(Arc<Mutex<Vec<T>>>);

impl<T> Clone for Recorder<T> {
    fn clone(&self) -> Self {
        Recorder(self.0.clone())
    }
}

impl<T> Default for Recorder<T> {
    fn default() -> Self {
        Recorder(Arc::new(Mutex::new(Vec::new())))
    }
}

impl<T: Clone> Recorder<T> {
    pub fn push(&self, item: T) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(item);
    }

    pub fn snapshot(&self) -> Vec<T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
