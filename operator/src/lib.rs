//! raftkv's Kubernetes operator: the `RaftCluster` resource, the objects it owns,
//! and the controller that turns replica changes into safe, one-at-a-time Raft
//! membership changes.
//!
//! Read it top down; every module imports only from the ones below it:
//!
//! - [`controller`]: the kube-runtime controller. One reconcile is a list of
//!   phases (owned objects, observation, solo recovery, one membership step,
//!   one rollout step, volume expansion, backups, status); each phase is a
//!   method of its `Reconciler`.
//! - [`members`]: how the controller reaches a cluster's members (injectable, so
//!   reconciler tests stand in for them).
//! - [`membership`], [`recovery`], [`snapshots`], [`maintenance`]: each a pure planner (given
//!   what was observed, the next step) and an executor (the member calls that
//!   carry a step out). [`rollout`]: which member pod to restart next after
//!   the pod template changed (pure; the controller deletes the pod).
//! - [`status`]: what the controller writes back; [`resources`]: the owned
//!   Kubernetes objects, pure functions of the resource; [`volumes`]: which
//!   member volumes to expand when `spec.storage.size` grows;
//!   [`certificates`]: what a cluster with `spec.tls` is issued, and when again.
//! - [`crd`]: the resource's spec and status (the CRD YAML is generated from it);
//!   [`naming`]: names, DNS names and member ids shared by everything else;
//!   [`metrics`]; [`leader_election`]: which replica of the operator reconciles;
//!   [`cron`]: when a scheduled backup, compaction or defragmentation is due.

pub mod certificates;
pub mod controller;
pub mod crd;
pub mod cron;
pub mod leader_election;
pub mod maintenance;
pub mod members;
pub mod membership;
pub mod metrics;
pub mod naming;
pub mod recovery;
pub mod resources;
pub mod rollout;
pub mod snapshots;
pub mod status;
pub mod volumes;

use certificates::CertError;
use membership::executor::ExecError;
use membership::Step;
use resources::BuildError;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building objects: {0}")]
    Build(#[from] BuildError),
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{step:?} failed: {source}")]
    Step {
        step: Step,
        #[source]
        source: ExecError,
    },
    #[error("moving leadership from pod ordinal {from} to member {to}: {source}")]
    MoveLeader {
        from: u32,
        to: u64,
        #[source]
        source: ExecError,
    },
    #[error("solo recovery: {source}")]
    Recovery {
        #[source]
        source: ExecError,
    },
    #[error("certificates: {0}")]
    Certificates(#[from] CertError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// The API server refused a write made over an older version of the
    /// object (409 Conflict): another write came first. Not a failure to
    /// report; the next reconcile starts from the newer version.
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::Kube {
                source: kube::Error::Api(status),
                ..
            } => status.code == 409,
            Error::Finalizer(err) => match err.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.is_conflict(),
                _ => false,
            },
            _ => false,
        }
    }
}

/// An API call's error as ours, saying what was being done.
pub(crate) fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}
