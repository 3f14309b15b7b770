//! Applying auth changes (the state itself is read in `store::auth`).

use super::{Applier, TokenChange};
use crate::errors::ApiError;
use crate::proto::authpb::Permission;
use crate::proto::authpb::Role;
use crate::proto::authpb::User;
use crate::proto::authpb::UserAddOptions;
use crate::proto::raftkvpb::auth_change::Op;
use crate::proto::raftkvpb::AuthChange;
use crate::proto::raftkvpb::AuthStamp;
use crate::store::auth::{
    auth_err, get_role, get_user, invalid_mgmt, is_enabled, names, old_revision, revision,
    role_not_found, user_not_found, ROOT,
};
use crate::store::cf;
use crate::store::schema::CF_AUTH;
use crate::store::schema::{role_key, user_key, KEY_AUTH_ENABLED, KEY_AUTH_REVISION, USER_PREFIX};
use prost::Message;

impl Applier<'_> {
    fn put_user(&mut self, u: &User) {
        let name = String::from_utf8_lossy(&u.name).into_owned();
        self.batch
            .put_cf(cf(self.db, CF_AUTH), user_key(&name), u.encode_to_vec());
    }

    fn put_role(&mut self, r: &Role) {
        let name = String::from_utf8_lossy(&r.name).into_owned();
        self.batch
            .put_cf(cf(self.db, CF_AUTH), role_key(&name), r.encode_to_vec());
    }

    fn user(&self, name: &str) -> Result<User, ApiError> {
        get_user(self.db, name)?.ok_or_else(user_not_found)
    }

    fn role(&self, name: &str) -> Result<Role, ApiError> {
        get_role(self.db, name)?.ok_or_else(role_not_found)
    }

    /// Why a command stamped with `stamp` may not apply: while auth is
    /// enabled, its permissions were checked against an older auth state than
    /// this one, perhaps before a revoke (etcd's ErrAuthOldRevision; the
    /// proposer checks again). The database is clean of auth changes here
    /// (see `needs_clean_db`).
    pub(crate) fn stale_auth(&mut self, stamp: &AuthStamp) -> Option<ApiError> {
        let db = self.db;
        let (enabled, current) = *self
            .auth_seen
            .get_or_insert_with(|| (is_enabled(db), revision(db)));
        (enabled && stamp.revision < current).then(old_revision)
    }

    /// Apply an auth change. The database is clean (see `needs_clean_db`), so
    /// reads see every earlier change.
    pub(crate) fn auth_change(&mut self, change: &AuthChange) -> Result<(), ApiError> {
        let enabled = is_enabled(self.db);
        let handle = cf(self.db, CF_AUTH);
        match &change.op {
            Some(Op::Enable(_)) => {
                let root = get_user(self.db, ROOT)?.ok_or_else(|| {
                    auth_err(tonic::Code::FailedPrecondition, "root user does not exist")
                })?;
                if !root.roles.iter().any(|r| r == ROOT) {
                    return Err(auth_err(
                        tonic::Code::FailedPrecondition,
                        "root user does not have root role",
                    ));
                }
                self.batch.put_cf(handle, KEY_AUTH_ENABLED, [1]);
            }
            Some(Op::Disable(_)) => self.batch.put_cf(handle, KEY_AUTH_ENABLED, [0]),
            Some(Op::UserAdd(req)) => {
                if req.name.is_empty() {
                    return Err(auth_err(tonic::Code::InvalidArgument, "user name is empty"));
                }
                if get_user(self.db, &req.name)?.is_some() {
                    return Err(auth_err(
                        tonic::Code::FailedPrecondition,
                        "user name already exists",
                    ));
                }
                self.put_user(&User {
                    name: req.name.clone().into_bytes(),
                    password: req.hashed_password.clone().into_bytes(),
                    roles: vec![],
                    options: Some(req.options.unwrap_or(UserAddOptions { no_password: false })),
                });
            }
            Some(Op::UserDelete(req)) => {
                if enabled && req.name == ROOT {
                    return Err(invalid_mgmt());
                }
                self.user(&req.name)?;
                self.batch.delete_cf(handle, user_key(&req.name));
            }
            Some(Op::UserChangePassword(req)) => {
                let mut u = self.user(&req.name)?;
                u.password = req.hashed_password.clone().into_bytes();
                self.put_user(&u);
            }
            Some(Op::UserGrantRole(req)) => {
                let mut u = self.user(&req.user)?;
                if req.role != ROOT {
                    self.role(&req.role)?;
                }
                if !u.roles.contains(&req.role) {
                    u.roles.push(req.role.clone());
                    u.roles.sort();
                }
                self.put_user(&u);
            }
            Some(Op::UserRevokeRole(req)) => {
                if enabled && req.name == ROOT && req.role == ROOT {
                    return Err(invalid_mgmt());
                }
                let mut u = self.user(&req.name)?;
                let before = u.roles.len();
                u.roles.retain(|r| r != &req.role);
                if u.roles.len() == before {
                    return Err(auth_err(
                        tonic::Code::FailedPrecondition,
                        "role is not granted to the user",
                    ));
                }
                self.put_user(&u);
            }
            Some(Op::RoleAdd(req)) => {
                if req.name.is_empty() {
                    return Err(auth_err(tonic::Code::InvalidArgument, "role name is empty"));
                }
                if get_role(self.db, &req.name)?.is_some() {
                    return Err(auth_err(
                        tonic::Code::FailedPrecondition,
                        "role name already exists",
                    ));
                }
                self.put_role(&Role {
                    name: req.name.clone().into_bytes(),
                    key_permission: vec![],
                });
            }
            Some(Op::RoleDelete(req)) => {
                if enabled && req.role == ROOT {
                    return Err(invalid_mgmt());
                }
                self.role(&req.role)?;
                self.batch.delete_cf(handle, role_key(&req.role));
                // Users lose the deleted role.
                for name in names(self.db, USER_PREFIX)? {
                    let mut u = self.user(&name)?;
                    if u.roles.contains(&req.role) {
                        u.roles.retain(|r| r != &req.role);
                        self.put_user(&u);
                    }
                }
            }
            Some(Op::RoleGrantPermission(req)) => {
                let mut r = self.role(&req.name)?;
                let perm: Permission = req.perm.clone().ok_or_else(|| {
                    auth_err(tonic::Code::InvalidArgument, "permission not given")
                })?;
                r.key_permission
                    .retain(|p| !(p.key == perm.key && p.range_end == perm.range_end));
                r.key_permission.push(perm);
                r.key_permission
                    .sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
                self.put_role(&r);
            }
            Some(Op::RoleRevokePermission(req)) => {
                let mut r = self.role(&req.role)?;
                let before = r.key_permission.len();
                r.key_permission
                    .retain(|p| !(p.key == req.key && p.range_end == req.range_end));
                if r.key_permission.len() == before {
                    return Err(auth_err(
                        tonic::Code::FailedPrecondition,
                        "permission is not granted to the role",
                    ));
                }
                self.put_role(&r);
            }
            None => return Ok(()),
        }
        let rev = revision(self.db) + 1;
        self.batch
            .put_cf(handle, KEY_AUTH_REVISION, rev.to_be_bytes());
        self.token_changes.extend(match &change.op {
            Some(Op::Enable(_)) | Some(Op::Disable(_)) => Some(TokenChange::AllRevoked),
            Some(Op::UserDelete(req)) => Some(TokenChange::UserRevoked(req.name.clone())),
            Some(Op::UserChangePassword(req)) => Some(TokenChange::UserRevoked(req.name.clone())),
            _ => None,
        });
        Ok(())
    }
}
