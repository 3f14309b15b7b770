//! raftkv's Kubernetes operator: the `RaftCluster` resource, the objects it owns,
//! and the controller that turns replica changes into safe, one-at-a-time Raft
//! membership changes.
//!
//! - [`crd`]: the resource's spec and status (the CRD YAML is generated from it).
//! - [`naming`]: names, DNS names and member ids shared by everything else.
//! - [`resources`]: the owned Kubernetes objects, pure functions of the resource.
//! - [`membership`]: the pure membership planner and the executor that talks to members.
//! - [`snapshots`]: scheduled backups (cron schedule, backup planner, retention).
//! - [`recovery`]: solo recovery after quorum loss (planner, recorded phases).
//! - [`controller`]: the kube-runtime controller; [`status`] computes what it writes.

pub mod controller;
pub mod crd;
pub mod membership;
pub mod metrics;
pub mod naming;
pub mod recovery;
pub mod resources;
pub mod snapshots;
pub mod status;
