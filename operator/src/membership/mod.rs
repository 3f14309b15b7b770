//! Raft membership: deciding the next change ([`planner`], pure) and carrying it
//! out against the members ([`executor`], gRPC). The controller feeds the
//! planner what it observed and routes each step to the executor or to
//! Kubernetes.

pub mod addresses;
pub mod admin;
pub mod executor;
pub mod observed;
pub mod planner;

pub use addresses::{ClientTls, MemberAddresses, MemberEndpoints};
pub use observed::{MemberReport, Observed, PodState, RaftMember, Role};
pub use planner::{plan_next_step, Plan, Refusal, Step, Wait};
