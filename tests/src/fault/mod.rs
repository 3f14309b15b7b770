//! Fault injection with checked histories (issue 8): a nemesis kills, pauses,
//! partitions and reconfigures a cluster while clients record every operation,
//! and checkers decide afterwards whether what the clients saw is allowed.
//!
//! - [`history`]: what the clients did (invoke, complete, outcome);
//! - [`checker`]: linearizability of register histories (WGL search);
//! - [`set_check`], [`watch_check`]: lost or invented appends, watch gaps;
//! - [`catch_up_check`]: a watcher catching up handed a gap by a compaction;
//! - [`lock_check`]: lock grants to keys that were not the oldest, and holds
//!   that overlap in time; [`lease_check`]: leases revoked while a client
//!   still rightly believed them alive;
//! - [`workload`], [`lock_workload`], [`lease_workload`],
//!   [`catch_up_workload`]: the clients, with
//!   [`session`] the leases they keep; [`nemesis`]: seeded schedules and
//!   injection;
//! - [`netns`]: members in network namespaces, so partitions are real cuts;
//! - [`power_cut`]: members that lose what they did not fsync;
//! - [`campaign`]: one run end to end, and its report.
//!
//! `tests/tests/fault_campaign.rs` runs a short campaign in every `cargo test`;
//! RELIABILITY.md explains how to run a long soak and records its results.

pub mod campaign;
pub mod catch_up_check;
pub mod catch_up_workload;
pub mod checker;
pub mod history;
pub mod lease_check;
pub mod lease_workload;
pub mod lock_check;
pub mod lock_workload;
pub mod nemesis;
pub mod netns;
pub mod power_cut;
pub mod session;
pub mod set_check;
pub mod watch_check;
pub mod workload;
