//! Authentication tokens and permission checks, as etcd's "simple" tokens.
//!
//! `Authenticate` checks a password against the replicated (bcrypt) hash and
//! hands out a random token. As with etcd's simple tokens, the token goes
//! through the log so every member knows it (in memory only: after a restart
//! clients authenticate again), and it lapses after five minutes unused.
//! Every KV, Watch and Lease call then carries the token in the `token`
//! metadata; while auth is enabled it must name a user whose roles cover the
//! keys the call reads or writes. The `root` role may do anything.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use rocksdb::DB;
use tonic::metadata::MetadataMap;

use crate::errors::ApiError;
use crate::proto::authpb::permission::Type as PermType;
use crate::proto::authpb::Permission;
use crate::proto::raftkvpb::AuthStamp;
use crate::store::auth;
use crate::store::auth::auth_err;
use crate::store::mvcc::KeyRange;

/// Metadata naming the user of a verified client certificate (its common
/// name), set by the client port's TLS layer alone (`server::services`).
pub const CERT_USER_METADATA: &str = "raftkv-cert-user";
/// etcd's bcrypt cost.
pub const BCRYPT_COST: u32 = 10;

/// What a call needs on a key range.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Need {
    Read,
    Write,
}

/// Who is calling (`user` is `None` when auth is disabled: everything is
/// allowed), bound to the database its permissions are read from, so a handler
/// asks "may this caller do that?" without reaching into the store itself.
#[derive(Clone)]
pub struct Caller {
    user: Option<String>,
    db: Arc<DB>,
    /// The auth revision when the caller was looked up, read before anything
    /// its checks read (0 while auth is disabled): a command stamped with it
    /// is refused at apply if the auth state changed in between (see
    /// `raftkvpb::AuthStamp`).
    revision: u64,
}

pub struct Tokens {
    live: Mutex<HashMap<String, (String, Instant)>>,
    /// How long a token may go unused (`--auth-token-ttl`).
    ttl: Duration,
}

pub fn invalid_token() -> ApiError {
    auth_err(tonic::Code::Unauthenticated, "invalid auth token")
}

pub fn permission_denied() -> ApiError {
    auth_err(tonic::Code::PermissionDenied, "permission denied")
}

pub fn hash_password(password: &str) -> Result<String, ApiError> {
    bcrypt::hash(password, BCRYPT_COST).map_err(ApiError::internal)
}

impl Tokens {
    pub fn new(ttl: Duration) -> Tokens {
        Tokens {
            live: Mutex::default(),
            ttl,
        }
    }

    /// Check a password; on success, a fresh token to replicate (see
    /// `AuthToken`), which becomes valid on each member as it applies it.
    pub fn check_password(&self, db: &DB, name: &str, password: &str) -> Result<String, ApiError> {
        let failed = || {
            auth_err(
                tonic::Code::InvalidArgument,
                "authentication failed, invalid user ID or password",
            )
        };
        let user = auth::get_user(db, name)?.ok_or_else(failed)?;
        let no_password = user.options.as_ref().is_some_and(|o| o.no_password);
        let hash = String::from_utf8_lossy(&user.password).into_owned();
        if no_password || hash.is_empty() || !bcrypt::verify(password, &hash).unwrap_or(false) {
            return Err(failed());
        }
        Ok(format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        ))
    }

    /// Remember a token (applied from the log on every member).
    pub fn insert(&self, token: String, user: String) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let ttl = self.ttl;
        live.retain(|_, (_, at)| at.elapsed() < ttl);
        live.insert(token, (user, Instant::now()));
    }

    /// End every token of `user` (its password changed, or it was deleted).
    pub fn revoke_user(&self, user: &str) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, (owner, _)| owner != user);
    }

    /// End every token (auth was turned off or on, or a snapshot replaced
    /// the state).
    pub fn revoke_all(&self) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The caller of a request: its user if auth is enabled (a valid token is
    /// then required), or nobody in particular if it is not.
    pub fn caller(&self, db: &Arc<DB>, md: &MetadataMap) -> Result<Caller, ApiError> {
        if !auth::is_enabled(db) {
            // Nothing is checked, so nothing to stamp: revision 0 is older
            // than any enabled auth state, so should auth be turned on
            // before the command applies, it is refused and checked again.
            return Ok(Caller {
                user: None,
                db: db.clone(),
                revision: 0,
            });
        }
        let revision = auth::revision(db);
        let Some(token) = md.get("token").and_then(|v| v.to_str().ok()) else {
            // No token: the client certificate's user, as etcd with
            // --client-cert-auth.
            return match md.get(CERT_USER_METADATA).and_then(|v| v.to_str().ok()) {
                Some(user) => Ok(Caller {
                    user: Some(user.to_string()),
                    db: db.clone(),
                    revision,
                }),
                None => Err(auth_err(tonic::Code::InvalidArgument, "user name is empty")),
            };
        };
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        match live.get_mut(token) {
            Some((user, at)) if at.elapsed() < self.ttl => {
                *at = Instant::now();
                Ok(Caller {
                    user: Some(user.clone()),
                    db: db.clone(),
                    revision,
                })
            }
            _ => Err(invalid_token()),
        }
    }
}

impl Caller {
    /// What a command proposed for this caller carries: the auth state its
    /// checks were made against.
    pub fn stamp(&self) -> AuthStamp {
        AuthStamp {
            revision: self.revision,
            user: self.user.clone().unwrap_or_default(),
        }
    }

    fn is_root(&self) -> Result<bool, ApiError> {
        let Some(name) = &self.user else {
            return Ok(true);
        };
        Ok(
            auth::get_user(&self.db, name)?
                .is_some_and(|u| u.roles.iter().any(|r| r == auth::ROOT)),
        )
    }

    /// Auth management, membership and maintenance need the root role.
    pub fn require_root(&self) -> Result<(), ApiError> {
        if self.is_root()? {
            Ok(())
        } else {
            Err(permission_denied())
        }
    }

    /// The caller may `need` every key in [key, range_end).
    pub fn require(&self, key: &[u8], range_end: &[u8], need: Need) -> Result<(), ApiError> {
        if self.is_root()? {
            return Ok(());
        }
        let name = self.user.as_deref().unwrap_or_default();
        let user = auth::get_user(&self.db, name)?.ok_or_else(permission_denied)?;
        let mut granted: Vec<KeyRange> = Vec::new();
        for role in &user.roles {
            let Some(r) = auth::get_role(&self.db, role)? else {
                continue;
            };
            granted.extend(
                r.key_permission
                    .iter()
                    .filter(|p| allows(p, need))
                    .map(|p| KeyRange::new(&p.key, &p.range_end)),
            );
        }
        if covered(&granted, &KeyRange::new(key, range_end)) {
            Ok(())
        } else {
            Err(permission_denied())
        }
    }
}

fn allows(p: &Permission, need: Need) -> bool {
    match PermType::try_from(p.perm_type) {
        Ok(PermType::Readwrite) => true,
        Ok(PermType::Read) => need == Need::Read,
        Ok(PermType::Write) => need == Need::Write,
        Err(_) => false,
    }
}

/// Whether the union of `granted` covers all of `wanted`.
fn covered(granted: &[KeyRange], wanted: &KeyRange) -> bool {
    match wanted {
        KeyRange::Single(k) => granted.iter().any(|g| g.contains(k)),
        KeyRange::Span { start, end } => {
            // Walk from `start`, jumping to the furthest end of any granted
            // range that contains the current point, until past `end`.
            let mut at = start.clone();
            loop {
                if end.as_ref().is_some_and(|e| at >= *e) {
                    return true;
                }
                let mut next: Option<Option<Vec<u8>>> = None;
                for g in granted {
                    if let KeyRange::Span { start: gs, end: ge } = g {
                        if *gs <= at && ge.as_ref().is_none_or(|e| at < *e) {
                            next = match (next, ge) {
                                (Some(None), _) | (_, None) => Some(None),
                                (Some(Some(a)), Some(b)) => Some(Some(a.max(b.clone()))),
                                (None, Some(b)) => Some(Some(b.clone())),
                            };
                        }
                    }
                }
                match next {
                    None => return false,
                    Some(None) => return true,
                    Some(Some(e)) => at = e,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(a: &str, b: &str) -> KeyRange {
        KeyRange::new(a.as_bytes(), b.as_bytes())
    }

    #[test]
    fn coverage_is_the_union_of_granted_ranges() {
        let granted = vec![span("a", "c"), span("c", "e"), KeyRange::new(b"x", b"")];
        assert!(covered(&granted, &span("a", "e")));
        assert!(covered(&granted, &span("b", "d")));
        assert!(!covered(&granted, &span("a", "f")));
        assert!(covered(&granted, &KeyRange::new(b"x", b"")));
        assert!(!covered(&granted, &KeyRange::new(b"y", b"")));
        assert!(
            !covered(&granted, &KeyRange::new(b"a", b"\0")),
            "an open end needs an open grant"
        );
        assert!(covered(
            &[KeyRange::new(b"a", b"\0")],
            &KeyRange::new(b"b", b"\0")
        ));
    }
}
