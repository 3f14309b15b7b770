//! The on-disk schema of a member, in one place: every column family of the
//! one RocksDB instance, every metadata key, and how keys are encoded. A
//! change here is a change of the data format.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `raft_log` | log index (big-endian u64) | a Raft log entry |
//! | `raft_meta` | [`KEY_VOTE`], [`KEY_COMMITTED`], [`KEY_LAST_PURGED`], [`KEY_CLUSTER_ID`], [`KEY_NODE_ID`], [`KEY_EPOCH`], [`KEY_FENCED`], [`KEY_REMOVED`], [`KEY_INCARNATION`] | Raft's vote and progress, and who this member is |
//! | `kv` | user key | the key's current `KeyValue` |
//! | `kv_history` | [`history_key`]: escaped user key, terminator, revision | every version until compaction |
//! | `sm_meta` | [`KEY_REVISION`], [`KEY_COMPACT_REVISION`], [`KEY_LAST_APPLIED`], [`KEY_MEMBERSHIP`], [`member_attr_key`], [`alarm_key`] | the state machine's own state |
//! | `kv_events` | [`event_key`]: revision, then order within it | every change, for watches |
//! | `leases` | [`lease_key`] | a lease's granted TTL |
//! | `lease_keys` | [`lease_key_entry`]: lease id, then user key | which keys a lease holds |
//! | `auth` | [`KEY_AUTH_ENABLED`], [`KEY_AUTH_REVISION`], [`user_key`], [`role_key`] | users, roles, the auth switch |
//!
//! `kv_history` keeps every version of every key, ordered by user key and then by
//! revision, so a read at a past revision is one forward scan. User keys are
//! arbitrary bytes, so they are escaped (`00` -> `00 FF`) and terminated (`00 01`)
//! before the big-endian revision: that keeps "a" < "a\0" < "ab" in encoded order.

pub const CF_RAFT_LOG: &str = "raft_log";
pub const CF_RAFT_META: &str = "raft_meta";
pub const CF_KV: &str = "kv";
pub const CF_KV_HISTORY: &str = "kv_history";
pub const CF_SM_META: &str = "sm_meta";
pub const CF_KV_EVENTS: &str = "kv_events";
pub const CF_LEASES: &str = "leases";
pub const CF_LEASE_KEYS: &str = "lease_keys";
pub const CF_AUTH: &str = "auth";

/// Every column family; the database is opened with all of them.
pub const ALL_CFS: [&str; 9] = [
    CF_RAFT_LOG,
    CF_RAFT_META,
    CF_KV,
    CF_KV_HISTORY,
    CF_SM_META,
    CF_KV_EVENTS,
    CF_LEASES,
    CF_LEASE_KEYS,
    CF_AUTH,
];

// `raft_meta`: Raft's own state, and this member's identity.
pub(crate) const KEY_VOTE: &[u8] = b"vote";
pub(crate) const KEY_COMMITTED: &[u8] = b"committed";
pub(crate) const KEY_LAST_PURGED: &[u8] = b"last_purged";
pub(crate) const KEY_CLUSTER_ID: &[u8] = b"cluster_id";
/// The member's own id, recorded by `serve` so offline commands know it.
pub(crate) const KEY_NODE_ID: &[u8] = b"node_id";
/// The epoch of the cluster (raised by each solo recovery, see `crate::epoch`).
pub(crate) const KEY_EPOCH: &[u8] = b"epoch";
/// Why this member is fenced (left behind by a solo recovery), if it is.
pub(crate) const KEY_FENCED: &[u8] = b"fenced";
/// Why this member stopped for good: it was removed from the cluster.
pub(crate) const KEY_REMOVED: &[u8] = b"removed";
/// This data dir's incarnation (see `crate::incarnation`), made when the
/// data dir is first opened.
pub(crate) const KEY_INCARNATION: &[u8] = b"incarnation";

// `sm_meta`: the state machine's own state.
pub(crate) const KEY_REVISION: &[u8] = b"revision";
pub(crate) const KEY_COMPACT_REVISION: &[u8] = b"compact_revision";
pub(crate) const KEY_LAST_APPLIED: &[u8] = b"last_applied";
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"membership";
/// Prefix of the raised alarms' keys (see [`alarm_key`]).
pub(crate) const ALARM_PREFIX: &[u8] = b"alarm/";

/// Prefix of the members' attributes keys (see [`member_attr_key`]).
pub(crate) const MEMBER_ATTR_PREFIX: &[u8] = b"member/";

/// A member's attributes (name, client URLs, incarnation), by member id.
pub(crate) fn member_attr_key(id: u64) -> Vec<u8> {
    let mut k = MEMBER_ATTR_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// A raised alarm: the member that raised it and the alarm type.
pub(crate) fn alarm_key(member: u64, kind: i32) -> Vec<u8> {
    let mut k = ALARM_PREFIX.to_vec();
    k.extend_from_slice(&member.to_be_bytes());
    k.extend_from_slice(&kind.to_be_bytes());
    k
}

// `auth`: the switch, its revision, users and roles.
pub(crate) const KEY_AUTH_ENABLED: &[u8] = b"enabled";
pub(crate) const KEY_AUTH_REVISION: &[u8] = b"revision";
/// Prefix of the users' keys (see [`user_key`]).
pub(crate) const USER_PREFIX: &str = "user/";
/// Prefix of the roles' keys (see [`role_key`]).
pub(crate) const ROLE_PREFIX: &str = "role/";

pub(crate) fn user_key(name: &str) -> Vec<u8> {
    [USER_PREFIX.as_bytes(), name.as_bytes()].concat()
}

pub(crate) fn role_key(name: &str) -> Vec<u8> {
    [ROLE_PREFIX.as_bytes(), name.as_bytes()].concat()
}

// `leases` and `lease_keys`.

/// A lease's key in `leases`: its id, big-endian.
pub(crate) fn lease_key(id: i64) -> [u8; 8] {
    (id as u64).to_be_bytes()
}

/// The prefix of a lease's entries in `lease_keys`.
pub(crate) fn lease_keys_prefix(id: i64) -> Vec<u8> {
    lease_key(id).to_vec()
}

/// The `lease_keys` entry saying lease `id` holds `key`.
pub(crate) fn lease_key_entry(id: i64, key: &[u8]) -> Vec<u8> {
    let mut k = lease_keys_prefix(id);
    k.extend_from_slice(key);
    k
}

// `kv_history` and `kv_events`.

/// `escape(user_key) ++ 00 01`: the prefix shared by all versions of `user_key`.
pub fn history_prefix(user_key: &[u8]) -> Vec<u8> {
    let mut out = escape(user_key);
    out.extend_from_slice(&[0, 1]);
    out
}

/// The history key of `user_key` at `revision`.
pub fn history_key(user_key: &[u8], revision: i64) -> Vec<u8> {
    let mut out = history_prefix(user_key);
    out.extend_from_slice(&(revision as u64).to_be_bytes());
    out
}

/// The escaped form of a user key, without terminator. Every history key of a
/// user key `k >= bound` sorts at or after `escape(bound)`, and every one of a
/// `k < bound` sorts before it, so it serves as a scan bound.
pub fn escape(user_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(user_key.len() + 10);
    for &b in user_key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out
}

/// Split a history key into (user key, revision). `None` if it is malformed.
pub fn decode_history_key(key: &[u8]) -> Option<(Vec<u8>, i64)> {
    if key.len() < 10 {
        return None;
    }
    let (body, rev) = key.split_at(key.len() - 8);
    let revision = u64::from_be_bytes(rev.try_into().ok()?) as i64;
    let mut user = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        match (body[i], body.get(i + 1)) {
            (0, Some(0xff)) => {
                user.push(0);
                i += 2;
            }
            (0, Some(1)) if i + 2 == body.len() => return Some((user, revision)),
            (0, _) => return None,
            (b, _) => {
                user.push(b);
                i += 1;
            }
        }
    }
    None
}

/// The `kv_events` key of the `sub`-th change made at `revision`: events sort
/// in the order they happened.
pub fn event_key(revision: i64, sub: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&(revision as u64).to_be_bytes());
    k[8..].copy_from_slice(&sub.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keys_sort_by_user_key_then_revision() {
        let keys: Vec<&[u8]> = vec![
            b"", b"\0", b"\0\0", b"\0\x01", b"a", b"a\0", b"a\0b", b"a\x01", b"ab", b"b",
        ];
        let mut encoded = vec![];
        for k in &keys {
            for rev in [1i64, 2, 300] {
                encoded.push(history_key(k, rev));
            }
        }
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(
            encoded, sorted,
            "encoding must preserve (key, revision) order"
        );
        for k in &keys {
            assert_eq!(
                decode_history_key(&history_key(k, 42)),
                Some((k.to_vec(), 42))
            );
        }
    }

    #[test]
    fn escaped_bound_separates_keys() {
        for (k, bound) in [(&b"a"[..], &b"ab"[..]), (b"a\0", b"a\x01"), (b"a", b"a\0")] {
            assert!(history_key(k, 9) < escape(bound), "{k:?} < {bound:?}");
            assert!(history_key(bound, 1) >= escape(bound));
        }
    }

    #[test]
    fn malformed_history_keys_are_rejected() {
        assert_eq!(decode_history_key(b"short"), None);
        assert_eq!(decode_history_key(b"a\0\x07\0\0\0\0\0\0\0\x01"), None);
    }
}
