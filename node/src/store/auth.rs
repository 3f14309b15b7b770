//! Users, roles and the auth switch in the state machine (column family `auth`):
//! reading them; changing them is `apply/auth.rs`.
//!
//! Every change is a log entry, applied (`apply/auth.rs`) in order on every member, so all
//! members enforce the same users and permissions. etcd's rules: auth can only
//! be enabled once a `root` user holding the `root` role exists, and while it is
//! enabled that user cannot be deleted or lose that role.

use prost::Message;
use rocksdb::IteratorMode;
use rocksdb::DB;

use super::cf;
use super::schema::CF_AUTH;
use super::schema::{role_key, user_key, KEY_AUTH_ENABLED, KEY_AUTH_REVISION};
use crate::errors::ApiError;
use crate::proto::authpb::Role;
use crate::proto::authpb::User;

pub const ROOT: &str = "root";

pub fn auth_err(code: tonic::Code, what: &str) -> ApiError {
    ApiError::new(code, format!("etcdserver: {what}"))
}

pub(crate) fn user_not_found() -> ApiError {
    auth_err(tonic::Code::FailedPrecondition, "user name not found")
}

pub(crate) fn role_not_found() -> ApiError {
    auth_err(tonic::Code::FailedPrecondition, "role name not found")
}

/// etcd's ErrAuthOldRevision: checked against an auth state that has since
/// changed (see `raftkvpb::AuthStamp`).
pub fn old_revision() -> ApiError {
    auth_err(
        tonic::Code::InvalidArgument,
        "revision of auth store is old",
    )
}

pub(crate) fn invalid_mgmt() -> ApiError {
    auth_err(tonic::Code::InvalidArgument, "invalid auth management")
}

pub fn is_enabled(db: &DB) -> bool {
    matches!(db.get_cf(cf(db, CF_AUTH), KEY_AUTH_ENABLED), Ok(Some(v)) if v == [1])
}

pub fn revision(db: &DB) -> u64 {
    match db.get_cf(cf(db, CF_AUTH), KEY_AUTH_REVISION) {
        Ok(Some(v)) => v.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0),
        _ => 0,
    }
}

pub fn get_user(db: &DB, name: &str) -> Result<Option<User>, ApiError> {
    let Some(b) = db
        .get_cf(cf(db, CF_AUTH), user_key(name))
        .map_err(ApiError::internal)?
    else {
        return Ok(None);
    };
    User::decode(b.as_slice())
        .map(Some)
        .map_err(ApiError::internal)
}

pub fn get_role(db: &DB, name: &str) -> Result<Option<Role>, ApiError> {
    let Some(b) = db
        .get_cf(cf(db, CF_AUTH), role_key(name))
        .map_err(ApiError::internal)?
    else {
        return Ok(None);
    };
    Role::decode(b.as_slice())
        .map(Some)
        .map_err(ApiError::internal)
}

/// Names under `prefix` (`schema::USER_PREFIX` or `ROLE_PREFIX`), sorted.
pub fn names(db: &DB, prefix: &str) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    let iter = db.iterator_cf(
        cf(db, CF_AUTH),
        IteratorMode::From(prefix.as_bytes(), rocksdb::Direction::Forward),
    );
    for item in iter {
        let (k, _) = item.map_err(ApiError::internal)?;
        let Some(name) = k.strip_prefix(prefix.as_bytes()) else {
            break;
        };
        out.push(String::from_utf8_lossy(name).into_owned());
    }
    Ok(out)
}
