//! etcd's Auth service: enable/disable, authenticate, users and roles.
//!
//! Changes are replicated commands (`AuthChange`); while auth is enabled only a
//! caller with the root role may make them. Passwords are hashed (bcrypt) on
//! the member that receives them, before anything is proposed.

use std::sync::Arc;
use std::time::Instant;

use tonic::metadata::MetadataMap;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::auth::hash_password;
use crate::errors::ApiError;
use crate::node::Node;
use crate::node::REQUEST_TIMEOUT;
use crate::proto::etcdserverpb::auth_server::Auth;
use crate::proto::etcdserverpb::*;
use crate::proto::raftkvpb;
use crate::proto::raftkvpb::auth_change::Op;
use crate::raft::Command;
use crate::store::auth;

pub struct AuthService {
    pub node: Arc<Node>,
}

impl AuthService {
    fn header(&self) -> Option<ResponseHeader> {
        Some(self.node.header(self.node.mvcc().current_revision()))
    }

    /// Check the caller may manage auth, then replicate the change.
    async fn change(&self, md: &MetadataMap, op: Op) -> Result<Option<ResponseHeader>, ApiError> {
        let caller = self.node.caller(md).await?;
        caller.require_root()?;
        let change = raftkvpb::command::Op::Auth(raftkvpb::AuthChange { op: Some(op) });
        self.node
            .propose_as(caller, md, change, |caller, _| caller.require_root())
            .await?;
        Ok(self.header())
    }

    /// Reading users and roles also needs root while auth is enabled.
    async fn read(&self, md: &MetadataMap) -> Result<(), ApiError> {
        self.node.require_root(md).await?;
        self.node.read_barrier().await
    }
}

/// bcrypt is deliberately slow: hash on a blocking thread, not an async worker.
async fn hash_off_thread(password: String) -> Result<String, Status> {
    Ok(
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| Status::internal(e.to_string()))??,
    )
}

fn role_not_found() -> ApiError {
    auth::auth_err(tonic::Code::FailedPrecondition, "role name not found")
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        req: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let header = self
            .change(req.metadata(), Op::Enable(AuthEnableRequest {}))
            .await?;
        Ok(Response::new(AuthEnableResponse { header }))
    }

    async fn auth_disable(
        &self,
        req: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let header = self
            .change(req.metadata(), Op::Disable(AuthDisableRequest {}))
            .await?;
        Ok(Response::new(AuthDisableResponse { header }))
    }

    async fn auth_status(
        &self,
        _req: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        self.node.read_barrier().await?;
        Ok(Response::new(AuthStatusResponse {
            header: self.header(),
            enabled: self.node.auth_enabled(),
            auth_revision: self.node.auth_revision(),
        }))
    }

    async fn authenticate(
        &self,
        req: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let req = req.into_inner();
        self.node.read_barrier().await?;
        if !self.node.auth_enabled() {
            return Err(auth::auth_err(
                tonic::Code::FailedPrecondition,
                "authentication is not enabled",
            )
            .into());
        }
        // A token issued on a password checked against an auth state that
        // changed before the token applied (the password changed, the user
        // went) is refused at apply: check again, as etcd does.
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let token = loop {
            let revision = self.node.auth_revision();
            let node = self.node.clone();
            let (name, password) = (req.name.clone(), req.password.clone());
            // bcrypt is deliberately slow: keep it off the async workers.
            let token = tokio::task::spawn_blocking(move || node.check_password(&name, &password))
                .await
                .map_err(|e| Status::internal(e.to_string()))??;
            let issue = raftkvpb::command::Op::AuthToken(raftkvpb::AuthToken {
                user: req.name.clone(),
                token: token.clone(),
            });
            let stamp = raftkvpb::AuthStamp {
                revision,
                user: req.name.clone(),
            };
            match self.node.propose(Command::stamped(issue, stamp)).await {
                Err(e) if e == auth::old_revision() && Instant::now() < deadline => {
                    self.node.read_barrier().await?;
                }
                outcome => break outcome.map(|_| token)?,
            }
        };
        Ok(Response::new(AuthenticateResponse {
            header: self.header(),
            token,
        }))
    }

    async fn user_add(
        &self,
        req: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let md = req.metadata().clone();
        let mut r = req.into_inner();
        let no_password = r.options.is_some_and(|o| o.no_password);
        if !no_password && r.hashed_password.is_empty() {
            r.hashed_password = hash_off_thread(std::mem::take(&mut r.password)).await?;
        }
        r.password.clear();
        let header = self.change(&md, Op::UserAdd(r)).await?;
        Ok(Response::new(AuthUserAddResponse { header }))
    }

    async fn user_get(
        &self,
        req: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        self.read(req.metadata()).await?;
        let user = self.node.user(&req.get_ref().name)?.ok_or_else(|| {
            auth::auth_err(tonic::Code::FailedPrecondition, "user name not found")
        })?;
        Ok(Response::new(AuthUserGetResponse {
            header: self.header(),
            roles: user.roles,
        }))
    }

    async fn user_list(
        &self,
        req: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        self.read(req.metadata()).await?;
        Ok(Response::new(AuthUserListResponse {
            header: self.header(),
            users: self.node.user_names()?,
        }))
    }

    async fn user_delete(
        &self,
        req: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let header = self
            .change(req.metadata(), Op::UserDelete(req.get_ref().clone()))
            .await?;
        Ok(Response::new(AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        req: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let md = req.metadata().clone();
        let mut r = req.into_inner();
        if r.hashed_password.is_empty() {
            r.hashed_password = hash_off_thread(std::mem::take(&mut r.password)).await?;
        }
        r.password.clear();
        let header = self.change(&md, Op::UserChangePassword(r)).await?;
        Ok(Response::new(AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        req: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let header = self
            .change(req.metadata(), Op::UserGrantRole(req.get_ref().clone()))
            .await?;
        Ok(Response::new(AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let header = self
            .change(req.metadata(), Op::UserRevokeRole(req.get_ref().clone()))
            .await?;
        Ok(Response::new(AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(
        &self,
        req: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let header = self
            .change(req.metadata(), Op::RoleAdd(req.get_ref().clone()))
            .await?;
        Ok(Response::new(AuthRoleAddResponse { header }))
    }

    async fn role_get(
        &self,
        req: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        self.read(req.metadata()).await?;
        let role = self
            .node
            .role(&req.get_ref().role)?
            .ok_or_else(role_not_found)?;
        Ok(Response::new(AuthRoleGetResponse {
            header: self.header(),
            perm: role.key_permission,
        }))
    }

    async fn role_list(
        &self,
        req: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        self.read(req.metadata()).await?;
        Ok(Response::new(AuthRoleListResponse {
            header: self.header(),
            roles: self.node.role_names()?,
        }))
    }

    async fn role_delete(
        &self,
        req: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let header = self
            .change(req.metadata(), Op::RoleDelete(req.get_ref().clone()))
            .await?;
        Ok(Response::new(AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let header = self
            .change(
                req.metadata(),
                Op::RoleGrantPermission(req.get_ref().clone()),
            )
            .await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse { header }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let header = self
            .change(
                req.metadata(),
                Op::RoleRevokePermission(req.get_ref().clone()),
            )
            .await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse { header }))
    }
}
