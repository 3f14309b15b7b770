//! go-grpc-prometheus's server counters, which etcd exports: calls started
//! and calls handled (by status code) per gRPC method. The dashboards and
//! alerts written for etcd (its mixin's failed-request rate, for one) read
//! these. The client port counts every call to etcd's services here
//! (`crate::server`'s layer), the JSON gateway's included.

use std::fmt::Write;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

/// etcd's gRPC methods, sorted, each with go-grpc-prometheus's `grpc_type`.
const GRPC_METHODS: &[(&str, &str, &str)] = &[
    ("etcdserverpb.Auth", "AuthDisable", "unary"),
    ("etcdserverpb.Auth", "AuthEnable", "unary"),
    ("etcdserverpb.Auth", "AuthStatus", "unary"),
    ("etcdserverpb.Auth", "Authenticate", "unary"),
    ("etcdserverpb.Auth", "RoleAdd", "unary"),
    ("etcdserverpb.Auth", "RoleDelete", "unary"),
    ("etcdserverpb.Auth", "RoleGet", "unary"),
    ("etcdserverpb.Auth", "RoleGrantPermission", "unary"),
    ("etcdserverpb.Auth", "RoleList", "unary"),
    ("etcdserverpb.Auth", "RoleRevokePermission", "unary"),
    ("etcdserverpb.Auth", "UserAdd", "unary"),
    ("etcdserverpb.Auth", "UserChangePassword", "unary"),
    ("etcdserverpb.Auth", "UserDelete", "unary"),
    ("etcdserverpb.Auth", "UserGet", "unary"),
    ("etcdserverpb.Auth", "UserGrantRole", "unary"),
    ("etcdserverpb.Auth", "UserList", "unary"),
    ("etcdserverpb.Auth", "UserRevokeRole", "unary"),
    ("etcdserverpb.Cluster", "MemberAdd", "unary"),
    ("etcdserverpb.Cluster", "MemberList", "unary"),
    ("etcdserverpb.Cluster", "MemberPromote", "unary"),
    ("etcdserverpb.Cluster", "MemberRemove", "unary"),
    ("etcdserverpb.Cluster", "MemberUpdate", "unary"),
    ("etcdserverpb.KV", "Compact", "unary"),
    ("etcdserverpb.KV", "DeleteRange", "unary"),
    ("etcdserverpb.KV", "Put", "unary"),
    ("etcdserverpb.KV", "Range", "unary"),
    ("etcdserverpb.KV", "Txn", "unary"),
    ("etcdserverpb.Lease", "LeaseGrant", "unary"),
    ("etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseLeases", "unary"),
    ("etcdserverpb.Lease", "LeaseRevoke", "unary"),
    ("etcdserverpb.Lease", "LeaseTimeToLive", "unary"),
    ("etcdserverpb.Maintenance", "Alarm", "unary"),
    ("etcdserverpb.Maintenance", "Defragment", "unary"),
    ("etcdserverpb.Maintenance", "Downgrade", "unary"),
    ("etcdserverpb.Maintenance", "Hash", "unary"),
    ("etcdserverpb.Maintenance", "HashKV", "unary"),
    ("etcdserverpb.Maintenance", "MoveLeader", "unary"),
    ("etcdserverpb.Maintenance", "Snapshot", "server_stream"),
    ("etcdserverpb.Maintenance", "Status", "unary"),
    ("etcdserverpb.Watch", "Watch", "bidi_stream"),
    ("v3electionpb.Election", "Campaign", "unary"),
    ("v3electionpb.Election", "Leader", "unary"),
    ("v3electionpb.Election", "Observe", "server_stream"),
    ("v3electionpb.Election", "Proclaim", "unary"),
    ("v3electionpb.Election", "Resign", "unary"),
    ("v3lockpb.Lock", "Lock", "unary"),
    ("v3lockpb.Lock", "Unlock", "unary"),
];

/// gRPC's status codes by number, as go-grpc-prometheus names them.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// go-grpc-prometheus's server counters, which etcd exports: calls started
/// and calls handled (by status code) per method. One counter per method
/// and code, found without a lock or an allocation.
pub struct GrpcCalls {
    started: Vec<AtomicU64>,
    /// `GRPC_CODES.len()` counters per method.
    handled: Vec<AtomicU64>,
}

/// One of etcd's gRPC methods (an index into `GRPC_METHODS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcMethod(usize);

impl GrpcMethod {
    /// The method a request path (`/etcdserverpb.KV/Range`) names, if it is
    /// one of etcd's.
    pub fn of_path(path: &str) -> Option<GrpcMethod> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        GRPC_METHODS
            .binary_search_by(|(s, m, _)| (*s, *m).cmp(&(service, method)))
            .ok()
            .map(GrpcMethod)
    }
}

impl Default for GrpcCalls {
    fn default() -> Self {
        let counters = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        GrpcCalls {
            started: counters(GRPC_METHODS.len()),
            handled: counters(GRPC_METHODS.len() * GRPC_CODES.len()),
        }
    }
}

impl GrpcCalls {
    pub fn started(&self, method: GrpcMethod) {
        self.started[method.0].fetch_add(1, Ordering::Relaxed);
    }

    /// `method` finished with gRPC status `code` (an unknown number counts
    /// as Unknown).
    pub fn handled(&self, method: GrpcMethod, code: i32) {
        let code = usize::try_from(code)
            .ok()
            .filter(|c| *c < GRPC_CODES.len())
            .unwrap_or(2);
        self.handled[method.0 * GRPC_CODES.len() + code].fetch_add(1, Ordering::Relaxed);
    }

    /// Every method's started count (zeros included, as go-grpc-prometheus
    /// registers them), and the handled counts that are not zero.
    pub(super) fn render(&self, out: &mut String) {
        let labels = |i: usize| {
            let (service, method, kind) = GRPC_METHODS[i];
            format!("grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{kind}\"")
        };
        let _ = writeln!(
            out,
            "# HELP grpc_server_started_total Total number of RPCs started on the server.\n\
             # TYPE grpc_server_started_total counter"
        );
        for (i, started) in self.started.iter().enumerate() {
            let n = started.load(Ordering::Relaxed);
            let _ = writeln!(out, "grpc_server_started_total{{{}}} {n}", labels(i));
        }
        let _ = writeln!(
            out,
            "# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.\n\
             # TYPE grpc_server_handled_total counter"
        );
        for (i, handled) in self.handled.iter().enumerate() {
            let n = handled.load(Ordering::Relaxed);
            if n > 0 {
                let (method, code) = (i / GRPC_CODES.len(), GRPC_CODES[i % GRPC_CODES.len()]);
                let _ = writeln!(
                    out,
                    "grpc_server_handled_total{{grpc_code=\"{code}\",{}}} {n}",
                    labels(method)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_calls_are_counted_per_method_and_code() {
        let calls = GrpcCalls::default();
        assert!(GRPC_METHODS
            .windows(2)
            .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
        let put = GrpcMethod::of_path("/etcdserverpb.KV/Put").unwrap();
        let watch = GrpcMethod::of_path("/etcdserverpb.Watch/Watch").unwrap();
        assert_eq!(
            GrpcMethod::of_path("/raftkvpb.admin.Admin/Initialize"),
            None
        );
        assert_eq!(GrpcMethod::of_path("/health"), None);
        calls.started(put);
        calls.started(put);
        calls.handled(put, 0);
        calls.handled(put, 14);
        calls.handled(put, 99);
        calls.started(watch);
        let mut text = String::new();
        calls.render(&mut text);
        let put_labels = r#"grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary""#;
        assert!(text.contains(&format!("grpc_server_started_total{{{put_labels}}} 2")));
        assert!(text.contains(&format!(
            "grpc_server_handled_total{{grpc_code=\"OK\",{put_labels}}} 1"
        )));
        assert!(text.contains(&format!(
            "grpc_server_handled_total{{grpc_code=\"Unavailable\",{put_labels}}} 1"
        )));
        assert!(text.contains(&format!(
            "grpc_server_handled_total{{grpc_code=\"Unknown\",{put_labels}}} 1"
        )));
        assert!(text.contains(
            r#"grpc_server_started_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 1"#
        ));
        assert!(text.contains(
            r#"grpc_server_started_total{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 0"#
        ));
    }
}
