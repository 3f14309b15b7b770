//! Fault injection with checked histories (issue 8): a nemesis kills, pauses,
//! partitions and reconfigures a cluster while clients record every operation,
//! and checkers decide afterwards whether what the clients saw is allowed.
//!
//! - [`history`]: what the clients did (invoke, complete, outcome);
//! - [`checker`]: linearizability of register histories (WGL search);
//! - [`set_check`], [`watch_check`]: lost or invented appends, watch gaps;
//! - [`lock_check`]: lock grants to keys that were not the oldest, and holds
//!   that overlap in time;
//! - [`workload`], [`lock_workload`]: the clients; [`nemesis`]: seeded
//!   schedules and injection;
//! - [`netns`]: members in network namespaces, so partitions are real cuts;
//! - [`campaign`]: one run end to end, and its report.
//!
//! `tests/tests/fault_campaign.rs` runs a short campaign in every `cargo test`;
//! RELIABILITY.md explains how to run a long soak and records its results.

pub mod campaign;
pub mod checker;
pub mod history;
pub mod lock_check;
pub mod lock_workload;
pub mod nemesis;
pub mod netns;
pub mod set_check;
pub mod watch_check;
pub mod workload;
