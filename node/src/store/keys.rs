//! Key encodings of the MVCC column families.
//!
//! `kv_history` keeps every version of every key, ordered by user key and then by
//! revision, so a read at a past revision is one forward scan. User keys are
//! arbitrary bytes, so they are escaped (`00` -> `00 FF`) and terminated (`00 01`)
//! before the big-endian revision: that keeps "a" < "a\0" < "ab" in encoded order.

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

/// The smallest key greater than every key with this prefix (etcd's `GetPrefixRangeEnd`).
/// `None` means "no upper bound" (the prefix is all 0xff or empty).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
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

    #[test]
    fn prefix_end_matches_etcd() {
        assert_eq!(prefix_end(b"abc"), Some(b"abd".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
