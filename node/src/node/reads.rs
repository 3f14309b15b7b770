//! What a handler may read from this member's store, asked of the member.
//!
//! The API layer never opens the database or names a column family: the
//! schema belongs to `crate::store` alone, and these are the questions the
//! etcd services ask of it (auth state, alarms, leases, member attributes).
//! Each reads what this member has applied; a handler that must answer
//! linearizably calls `read_barrier` first, as for a KV range.

use crate::errors::ApiError;
use crate::proto::authpb::Role;
use crate::proto::authpb::User;
use crate::proto::etcdserverpb::AlarmMember;
use crate::proto::mvccpb::KeyValue;
use crate::proto::raftkvpb::MemberAttributes;
use crate::raft::NodeId;
use crate::store;

use super::Node;

impl Node {
    /// Whether auth is enabled.
    pub fn auth_enabled(&self) -> bool {
        store::auth::is_enabled(&self.db)
    }

    /// The auth revision: how many auth changes have been applied.
    pub fn auth_revision(&self) -> u64 {
        store::auth::revision(&self.db)
    }

    pub fn user(&self, name: &str) -> Result<Option<User>, ApiError> {
        store::auth::get_user(&self.db, name)
    }

    pub fn role(&self, name: &str) -> Result<Option<Role>, ApiError> {
        store::auth::get_role(&self.db, name)
    }

    /// Every user's name, sorted.
    pub fn user_names(&self) -> Result<Vec<String>, ApiError> {
        store::auth::names(&self.db, store::schema::USER_PREFIX)
    }

    /// Every role's name, sorted.
    pub fn role_names(&self) -> Result<Vec<String>, ApiError> {
        store::auth::names(&self.db, store::schema::ROLE_PREFIX)
    }

    /// Check a user's password; on success, a fresh token to replicate. bcrypt
    /// is deliberately slow: call this off the async workers.
    pub fn check_password(&self, name: &str, password: &str) -> Result<String, ApiError> {
        self.tokens.check_password(&self.db, name, password)
    }

    /// Every raised alarm.
    pub fn alarms(&self) -> Result<Vec<AlarmMember>, ApiError> {
        store::alarm::alarms(&self.db)
    }

    /// The keys attached to lease `id`.
    pub fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>, ApiError> {
        store::lease::lease_keys(&self.db, id)
    }

    /// The id of every lease that exists.
    pub fn lease_ids(&self) -> Result<Vec<i64>, ApiError> {
        Ok(store::lease::all_leases(&self.db)?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// `--quota-backend-bytes`, as in force (etcd's default when 0 was given).
    pub fn quota_bytes(&self) -> u64 {
        self.quota_bytes
    }

    /// Bytes this member's database takes on disk (Status's db size).
    pub fn disk_size(&self) -> u64 {
        store::disk_size(&self.data_dir)
    }

    /// The events from revision `from` on, for a watch catching up.
    pub fn watch_history(&self, from: i64) -> Result<crate::watch::hub::History, ApiError> {
        crate::watch::hub::history(&self.db, from)
    }

    /// The version of `key` before the change at `revision`, for a watch that
    /// asked for previous values.
    pub fn prev_kv(&self, key: &[u8], revision: i64) -> Option<KeyValue> {
        crate::watch::hub::prev_kv(&self.db, key, revision)
    }

    /// The name and client URLs member `id` published (see `store::members`).
    pub fn member_attributes(&self, id: NodeId) -> Option<MemberAttributes> {
        store::members::attributes(&self.db, id)
    }
}
