//! Which `/v3/...` path is which gRPC call: etcd's `google.api.http`
//! annotations (rpc.proto, v3election.proto, v3lock.proto), every one a
//! `POST` with the whole request as its body.

use axum::Router;

use super::bidi;
use super::server_streaming;
use super::unary;
use super::Gateway;

/// Every `/v3/...` route, each the gRPC call etcd's gateway maps it to.
pub(super) fn table() -> Router<Gateway> {
    use crate::proto::etcdserverpb::*;
    use crate::proto::v3electionpb::*;
    use crate::proto::v3lockpb::*;
    const KV: &str = "/etcdserverpb.KV/";
    const LEASE: &str = "/etcdserverpb.Lease/";
    const CLUSTER: &str = "/etcdserverpb.Cluster/";
    const MAINTENANCE: &str = "/etcdserverpb.Maintenance/";
    const AUTH: &str = "/etcdserverpb.Auth/";
    const ELECTION: &str = "/v3electionpb.Election/";
    const LOCK: &str = "/v3lockpb.Lock/";
    let router = Router::new()
        .route(
            "/v3/kv/range",
            unary::<RangeRequest, RangeResponse>(KV, "Range"),
        )
        .route("/v3/kv/put", unary::<PutRequest, PutResponse>(KV, "Put"))
        .route(
            "/v3/kv/deleterange",
            unary::<DeleteRangeRequest, DeleteRangeResponse>(KV, "DeleteRange"),
        )
        .route("/v3/kv/txn", unary::<TxnRequest, TxnResponse>(KV, "Txn"))
        .route(
            "/v3/kv/compaction",
            unary::<CompactionRequest, CompactionResponse>(KV, "Compact"),
        )
        .route(
            "/v3/watch",
            bidi::<WatchRequest, WatchResponse>("/etcdserverpb.Watch/", "Watch"),
        )
        .route(
            "/v3/lease/grant",
            unary::<LeaseGrantRequest, LeaseGrantResponse>(LEASE, "LeaseGrant"),
        )
        .route(
            "/v3/lease/keepalive",
            bidi::<LeaseKeepAliveRequest, LeaseKeepAliveResponse>(LEASE, "LeaseKeepAlive"),
        );
    // etcd serves these three under both names.
    let router = ["/v3/lease", "/v3/kv/lease"]
        .into_iter()
        .fold(router, |router, prefix| {
            router
                .route(
                    &format!("{prefix}/revoke"),
                    unary::<LeaseRevokeRequest, LeaseRevokeResponse>(LEASE, "LeaseRevoke"),
                )
                .route(
                    &format!("{prefix}/timetolive"),
                    unary::<LeaseTimeToLiveRequest, LeaseTimeToLiveResponse>(
                        LEASE,
                        "LeaseTimeToLive",
                    ),
                )
                .route(
                    &format!("{prefix}/leases"),
                    unary::<LeaseLeasesRequest, LeaseLeasesResponse>(LEASE, "LeaseLeases"),
                )
        });
    router
        .route(
            "/v3/cluster/member/add",
            unary::<MemberAddRequest, MemberAddResponse>(CLUSTER, "MemberAdd"),
        )
        .route(
            "/v3/cluster/member/remove",
            unary::<MemberRemoveRequest, MemberRemoveResponse>(CLUSTER, "MemberRemove"),
        )
        .route(
            "/v3/cluster/member/update",
            unary::<MemberUpdateRequest, MemberUpdateResponse>(CLUSTER, "MemberUpdate"),
        )
        .route(
            "/v3/cluster/member/list",
            unary::<MemberListRequest, MemberListResponse>(CLUSTER, "MemberList"),
        )
        .route(
            "/v3/cluster/member/promote",
            unary::<MemberPromoteRequest, MemberPromoteResponse>(CLUSTER, "MemberPromote"),
        )
        .route(
            "/v3/maintenance/alarm",
            unary::<AlarmRequest, AlarmResponse>(MAINTENANCE, "Alarm"),
        )
        .route(
            "/v3/maintenance/status",
            unary::<StatusRequest, StatusResponse>(MAINTENANCE, "Status"),
        )
        .route(
            "/v3/maintenance/defragment",
            unary::<DefragmentRequest, DefragmentResponse>(MAINTENANCE, "Defragment"),
        )
        .route(
            "/v3/maintenance/hash",
            unary::<HashRequest, HashResponse>(MAINTENANCE, "Hash"),
        )
        .route(
            "/v3/maintenance/hashkv",
            unary::<HashKvRequest, HashKvResponse>(MAINTENANCE, "HashKV"),
        )
        .route(
            "/v3/maintenance/snapshot",
            server_streaming::<SnapshotRequest, SnapshotResponse>(MAINTENANCE, "Snapshot"),
        )
        .route(
            "/v3/maintenance/transfer-leadership",
            unary::<MoveLeaderRequest, MoveLeaderResponse>(MAINTENANCE, "MoveLeader"),
        )
        .route(
            "/v3/maintenance/downgrade",
            unary::<DowngradeRequest, DowngradeResponse>(MAINTENANCE, "Downgrade"),
        )
        .route(
            "/v3/auth/enable",
            unary::<AuthEnableRequest, AuthEnableResponse>(AUTH, "AuthEnable"),
        )
        .route(
            "/v3/auth/disable",
            unary::<AuthDisableRequest, AuthDisableResponse>(AUTH, "AuthDisable"),
        )
        .route(
            "/v3/auth/status",
            unary::<AuthStatusRequest, AuthStatusResponse>(AUTH, "AuthStatus"),
        )
        .route(
            "/v3/auth/authenticate",
            unary::<AuthenticateRequest, AuthenticateResponse>(AUTH, "Authenticate"),
        )
        .route(
            "/v3/auth/user/add",
            unary::<AuthUserAddRequest, AuthUserAddResponse>(AUTH, "UserAdd"),
        )
        .route(
            "/v3/auth/user/get",
            unary::<AuthUserGetRequest, AuthUserGetResponse>(AUTH, "UserGet"),
        )
        .route(
            "/v3/auth/user/list",
            unary::<AuthUserListRequest, AuthUserListResponse>(AUTH, "UserList"),
        )
        .route(
            "/v3/auth/user/delete",
            unary::<AuthUserDeleteRequest, AuthUserDeleteResponse>(AUTH, "UserDelete"),
        )
        .route(
            "/v3/auth/user/changepw",
            unary::<AuthUserChangePasswordRequest, AuthUserChangePasswordResponse>(
                AUTH,
                "UserChangePassword",
            ),
        )
        .route(
            "/v3/auth/user/grant",
            unary::<AuthUserGrantRoleRequest, AuthUserGrantRoleResponse>(AUTH, "UserGrantRole"),
        )
        .route(
            "/v3/auth/user/revoke",
            unary::<AuthUserRevokeRoleRequest, AuthUserRevokeRoleResponse>(AUTH, "UserRevokeRole"),
        )
        .route(
            "/v3/auth/role/add",
            unary::<AuthRoleAddRequest, AuthRoleAddResponse>(AUTH, "RoleAdd"),
        )
        .route(
            "/v3/auth/role/get",
            unary::<AuthRoleGetRequest, AuthRoleGetResponse>(AUTH, "RoleGet"),
        )
        .route(
            "/v3/auth/role/list",
            unary::<AuthRoleListRequest, AuthRoleListResponse>(AUTH, "RoleList"),
        )
        .route(
            "/v3/auth/role/delete",
            unary::<AuthRoleDeleteRequest, AuthRoleDeleteResponse>(AUTH, "RoleDelete"),
        )
        .route(
            "/v3/auth/role/grant",
            unary::<AuthRoleGrantPermissionRequest, AuthRoleGrantPermissionResponse>(
                AUTH,
                "RoleGrantPermission",
            ),
        )
        .route(
            "/v3/auth/role/revoke",
            unary::<AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse>(
                AUTH,
                "RoleRevokePermission",
            ),
        )
        .route(
            "/v3/election/campaign",
            unary::<CampaignRequest, CampaignResponse>(ELECTION, "Campaign"),
        )
        .route(
            "/v3/election/proclaim",
            unary::<ProclaimRequest, ProclaimResponse>(ELECTION, "Proclaim"),
        )
        .route(
            "/v3/election/leader",
            unary::<LeaderRequest, LeaderResponse>(ELECTION, "Leader"),
        )
        .route(
            "/v3/election/observe",
            server_streaming::<LeaderRequest, LeaderResponse>(ELECTION, "Observe"),
        )
        .route(
            "/v3/election/resign",
            unary::<ResignRequest, ResignResponse>(ELECTION, "Resign"),
        )
        .route(
            "/v3/lock/lock",
            unary::<LockRequest, LockResponse>(LOCK, "Lock"),
        )
        .route(
            "/v3/lock/unlock",
            unary::<UnlockRequest, UnlockResponse>(LOCK, "Unlock"),
        )
}
