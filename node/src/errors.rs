//! The errors raftkv returns to clients, with etcd's gRPC codes and messages;
//! and the one `raftkv serve` stops with when its data dir no longer serves as
//! its member ([`NoLongerMember`]).
//!
//! Clients (etcdctl, client libraries, Kubernetes) match on these exact strings,
//! so each constructor mirrors one of etcd's `rpctypes` errors.

use std::fmt;

use tonic::Code;

use crate::proto::raftkvpb::CommandError;

/// `raftkv serve`'s exit status when it stopped (or would not start) because
/// its data dir no longer serves as its member: not a crash, so `raftkv dev`
/// and supervisors can tell.
pub const NO_LONGER_MEMBER_EXIT_CODE: u8 = 3;

/// The error `serve` fails with when the member was removed
/// (`crate::removal`) or its data dir replaced (`crate::incarnation`): the
/// reason and what to do instead.
#[derive(Debug)]
pub struct NoLongerMember(pub String);

impl fmt::Display for NoLongerMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoLongerMember {}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn empty_key() -> Self {
        Self::new(Code::InvalidArgument, "etcdserver: key is not provided")
    }
    pub fn key_not_found() -> Self {
        Self::new(Code::InvalidArgument, "etcdserver: key not found")
    }
    pub fn value_provided() -> Self {
        Self::new(Code::InvalidArgument, "etcdserver: value is provided")
    }
    pub fn lease_provided() -> Self {
        Self::new(Code::InvalidArgument, "etcdserver: lease is provided")
    }
    pub fn too_many_ops() -> Self {
        Self::new(
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        )
    }
    pub fn duplicate_key() -> Self {
        Self::new(
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        )
    }
    pub fn request_too_large() -> Self {
        Self::new(Code::InvalidArgument, "etcdserver: request is too large")
    }
    pub fn compacted() -> Self {
        Self::new(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        )
    }
    pub fn future_revision() -> Self {
        Self::new(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        )
    }
    pub fn lease_not_found() -> Self {
        Self::new(Code::NotFound, "etcdserver: requested lease not found")
    }
    pub fn member_not_found() -> Self {
        Self::new(Code::NotFound, "etcdserver: member not found")
    }
    pub fn member_exists() -> Self {
        Self::new(
            Code::FailedPrecondition,
            "etcdserver: member ID already exist",
        )
    }
    pub fn peer_url_exists() -> Self {
        Self::new(
            Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists",
        )
    }
    pub fn member_bad_urls() -> Self {
        Self::new(
            Code::InvalidArgument,
            "etcdserver: given member URLs are invalid",
        )
    }
    pub fn member_not_learner() -> Self {
        Self::new(
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member",
        )
    }
    /// etcd's strict reconfiguration check refused a voter that would leave
    /// fewer reachable voters than a quorum.
    pub fn unhealthy_cluster() -> Self {
        Self::new(Code::Unavailable, "etcdserver: unhealthy cluster")
    }

    pub fn learner_not_ready() -> Self {
        Self::new(
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member which is in sync with leader",
        )
    }
    pub fn last_voter() -> Self {
        Self::new(
            Code::FailedPrecondition,
            "etcdserver: cannot remove the last voting member of the cluster",
        )
    }
    pub fn no_leader() -> Self {
        Self::new(Code::Unavailable, "etcdserver: no leader")
    }
    pub fn timeout() -> Self {
        Self::new(Code::Unavailable, "etcdserver: request timed out")
    }
    /// Internal: the member asked is not the leader and proposed nothing, so the
    /// request may be retried elsewhere. Never returned to clients.
    pub fn not_leader() -> Self {
        Self::new(Code::Unavailable, "raftkv: not the leader")
    }
    pub fn leader_changed() -> Self {
        Self::new(Code::Unavailable, "etcdserver: leader changed")
    }
    pub fn internal(message: impl fmt::Display) -> Self {
        Self::new(Code::Internal, format!("raftkv: {message}"))
    }
    pub fn unavailable(message: impl fmt::Display) -> Self {
        Self::new(Code::Unavailable, format!("raftkv: {message}"))
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        tonic::Status::new(e.code, e.message)
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        ApiError::new(s.code(), s.message())
    }
}

impl From<ApiError> for CommandError {
    fn from(e: ApiError) -> Self {
        CommandError {
            code: e.code as i32,
            message: e.message,
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        ApiError::new(Code::from_i32(e.code), e.message)
    }
}
