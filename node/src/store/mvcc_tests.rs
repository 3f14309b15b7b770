//! MVCC semantics of the applier and reader against a real RocksDB in a temp dir.

use prost::Message;

use super::apply::Applier;
use super::mvcc::Mvcc;
use super::open_db;
use crate::errors::ApiError;
use crate::proto::etcdserverpb::compare::*;
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::response_op::Response;
use crate::proto::etcdserverpb::*;
use crate::proto::raftkvpb::command::Op;
use crate::proto::raftkvpb::command_result::Result as Applied;
use crate::proto::raftkvpb::Command;

struct Store {
    _dir: tempfile::TempDir,
    db: std::sync::Arc<rocksdb::DB>,
}

impl Store {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        Store { _dir: dir, db }
    }

    /// Apply one command in its own batch, as one log entry would be.
    fn apply(&self, op: Op) -> Result<Applied, ApiError> {
        let mut applier = Applier::new(&self.db);
        let result = applier
            .apply(&Command {
                op: Some(op),
                stamp: None,
            })
            .result
            .unwrap();
        self.db.write(applier.take_batch()).unwrap();
        match result {
            Applied::Error(e) => Err(e.into()),
            r => Ok(r),
        }
    }

    fn put(&self, k: &str, v: &str) -> i64 {
        match self.apply(Op::Put(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })) {
            Ok(Applied::Put(p)) => p.header.unwrap().revision,
            other => panic!("{other:?}"),
        }
    }

    fn range(&self, k: &str, end: &str, rev: i64) -> Result<RangeResponse, ApiError> {
        Mvcc::new(self.db.clone()).range(&RangeRequest {
            key: k.into(),
            range_end: end.into(),
            revision: rev,
            ..Default::default()
        })
    }

    fn value_at(&self, k: &str, rev: i64) -> Option<String> {
        let r = self.range(k, "", rev).unwrap();
        r.kvs
            .first()
            .map(|kv| String::from_utf8(kv.value.clone()).unwrap())
    }
}

#[test]
fn revisions_versions_and_history() {
    let s = Store::new();
    assert_eq!(
        s.put("a", "1"),
        2,
        "the first write makes revision 2, as in etcd"
    );
    assert_eq!(s.put("a", "2"), 3);
    assert_eq!(s.put("b", "x"), 4);
    let kv = s.range("a", "", 0).unwrap().kvs.remove(0);
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(s.value_at("a", 2).as_deref(), Some("1"));
    assert_eq!(s.value_at("a", 3).as_deref(), Some("2"));
    assert_eq!(s.value_at("b", 3), None, "b did not exist at revision 3");

    let del = s.apply(Op::DeleteRange(DeleteRangeRequest {
        key: "a".into(),
        prev_kv: true,
        ..Default::default()
    }));
    let Ok(Applied::DeleteRange(d)) = del else {
        panic!()
    };
    assert_eq!((d.deleted, d.header.unwrap().revision), (1, 5));
    assert_eq!(d.prev_kvs[0].value, b"2");
    assert_eq!(s.value_at("a", 0), None);
    assert_eq!(s.value_at("a", 4).as_deref(), Some("2"));
    assert_eq!(s.put("a", "new"), 6);
    let kv = s.range("a", "", 0).unwrap().kvs.remove(0);
    assert_eq!(
        (kv.create_revision, kv.version),
        (6, 1),
        "a re-created key starts over"
    );

    // Deleting nothing does not bump the revision.
    let Ok(Applied::DeleteRange(d)) = s.apply(Op::DeleteRange(DeleteRangeRequest {
        key: "zz".into(),
        ..Default::default()
    })) else {
        panic!()
    };
    assert_eq!((d.deleted, d.header.unwrap().revision), (0, 6));
    assert_eq!(
        s.range("a", "", 7).unwrap_err(),
        ApiError::future_revision()
    );
}

#[test]
fn compaction_keeps_what_later_reads_need() {
    let s = Store::new();
    s.put("k", "1"); // 2
    s.put("k", "2"); // 3
    s.put("gone", "x"); // 4
    s.apply(Op::DeleteRange(DeleteRangeRequest {
        key: "gone".into(),
        ..Default::default()
    }))
    .unwrap(); // 5
    s.put("k", "3"); // 6
    s.apply(Op::Compact(CompactionRequest {
        revision: 5,
        physical: true,
    }))
    .unwrap();
    assert_eq!(s.range("k", "", 4).unwrap_err(), ApiError::compacted());
    assert_eq!(
        s.value_at("k", 5).as_deref(),
        Some("2"),
        "the version live at the compact revision stays"
    );
    assert_eq!(s.value_at("k", 6).as_deref(), Some("3"));
    assert_eq!(s.value_at("gone", 5), None);
    let again = s.apply(Op::Compact(CompactionRequest {
        revision: 5,
        physical: false,
    }));
    assert_eq!(again.unwrap_err(), ApiError::compacted());
    // Only k's versions at 3 and 6 remain in history (2 and gone's two are dropped).
    let history = s.db.iterator_cf(
        super::cf(&s.db, super::schema::CF_KV_HISTORY),
        rocksdb::IteratorMode::Start,
    );
    assert_eq!(history.count(), 2);
}

fn cmp_value(k: &str, v: &str, result: CompareResult) -> Compare {
    Compare {
        key: k.into(),
        target: CompareTarget::Value as i32,
        result: result as i32,
        target_union: Some(TargetUnion::Value(v.into())),
        ..Default::default()
    }
}

fn put_op(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })),
    }
}

fn get_op(k: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            key: k.into(),
            ..Default::default()
        })),
    }
}

#[test]
fn txn_branches_share_one_revision_and_see_their_own_writes() {
    let s = Store::new();
    s.put("x", "1"); // 2
    let txn = TxnRequest {
        compare: vec![cmp_value("x", "1", CompareResult::Equal)],
        success: vec![put_op("x", "2"), put_op("y", "9"), get_op("x")],
        failure: vec![get_op("x")],
    };
    let Ok(Applied::Txn(r)) = s.apply(Op::Txn(txn.clone())) else {
        panic!()
    };
    assert!(r.succeeded);
    assert_eq!(r.header.unwrap().revision, 3, "two puts, one revision");
    let Some(Response::ResponseRange(read)) = &r.responses[2].response else {
        panic!()
    };
    assert_eq!(
        read.kvs[0].value, b"2",
        "a read in the txn sees the txn's earlier put"
    );
    assert_eq!(s.range("y", "", 0).unwrap().kvs[0].mod_revision, 3);

    let Ok(Applied::Txn(r)) = s.apply(Op::Txn(txn)) else {
        panic!()
    };
    assert!(!r.succeeded, "x is no longer 1");
    assert_eq!(
        r.header.unwrap().revision,
        3,
        "a read-only branch does not bump the revision"
    );
}

#[test]
fn missing_keys_compare_as_zero_and_value_compares_fail() {
    let s = Store::new();
    let version_is_zero = Compare {
        key: "nope".into(),
        target: CompareTarget::Version as i32,
        result: CompareResult::Equal as i32,
        target_union: Some(TargetUnion::Version(0)),
        ..Default::default()
    };
    let txn = |c: Compare| TxnRequest {
        compare: vec![c],
        success: vec![],
        failure: vec![],
    };
    let Ok(Applied::Txn(r)) = s.apply(Op::Txn(txn(version_is_zero))) else {
        panic!()
    };
    assert!(
        r.succeeded,
        "create-if-absent idiom: version == 0 holds for a missing key"
    );
    let Ok(Applied::Txn(r)) = s.apply(Op::Txn(txn(cmp_value("nope", "", CompareResult::Equal))))
    else {
        panic!()
    };
    assert!(!r.succeeded);
}

#[test]
fn put_with_ignore_value_needs_an_existing_key_and_leases_do_not_exist_yet() {
    let s = Store::new();
    let ignore = PutRequest {
        key: "k".into(),
        ignore_value: true,
        ..Default::default()
    };
    assert_eq!(
        s.apply(Op::Put(ignore.clone())).unwrap_err(),
        ApiError::key_not_found()
    );
    s.put("k", "kept");
    s.apply(Op::Put(ignore)).unwrap();
    assert_eq!(s.value_at("k", 0).as_deref(), Some("kept"));
    let leased = PutRequest {
        key: "k".into(),
        lease: 7,
        ..Default::default()
    };
    assert_eq!(
        s.apply(Op::Put(leased)).unwrap_err(),
        ApiError::lease_not_found()
    );
}

#[test]
fn prefix_and_open_ended_ranges() {
    let s = Store::new();
    for k in ["a", "ab", "abc", "b", "\u{7f}z"] {
        s.put(k, "v");
    }
    let keys = |r: RangeResponse| {
        r.kvs
            .into_iter()
            .map(|kv| String::from_utf8(kv.key).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(s.range("ab", "ac", 0).unwrap()), ["ab", "abc"]);
    assert_eq!(keys(s.range("b", "\0", 0).unwrap()), ["b", "\u{7f}z"]);
    assert_eq!(keys(s.range("\0", "\0", 0).unwrap()).len(), 5);
    assert!(
        keys(s.range("c", "a", 0).unwrap()).is_empty(),
        "an end before the key is an empty range"
    );
    // The same ranges at a past revision go through history.
    assert_eq!(keys(s.range("ab", "ac", 4).unwrap()), ["ab", "abc"]);
    assert_eq!(keys(s.range("a", "\0", 3).unwrap()), ["a", "ab"]);
    // Records in kv are whole KeyValue messages.
    let raw =
        s.db.get_cf(super::cf(&s.db, super::schema::CF_KV), "b")
            .unwrap()
            .unwrap();
    assert_eq!(
        crate::proto::mvccpb::KeyValue::decode(raw.as_slice())
            .unwrap()
            .key,
        b"b"
    );
}

#[test]
fn nested_compares_see_the_state_before_the_txn() {
    let s = Store::new();
    s.put("x", "1");
    // Outer success writes x=2, then a nested txn compares x == "1": etcd decides
    // every compare before running any op, so the nested compare holds.
    let nested = RequestOp {
        request: Some(Request::RequestTxn(TxnRequest {
            compare: vec![cmp_value("x", "1", CompareResult::Equal)],
            success: vec![put_op("nested", "then")],
            failure: vec![put_op("nested", "else")],
        })),
    };
    let txn = TxnRequest {
        compare: vec![],
        success: vec![put_op("x", "2"), nested],
        failure: vec![],
    };
    s.apply(Op::Txn(txn)).unwrap();
    assert_eq!(s.value_at("nested", 0).as_deref(), Some("then"));
}

#[test]
fn a_txn_with_a_failing_op_changes_nothing() {
    let s = Store::new();
    let before = s.put("a", "1");
    let bad = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("a", "2"),
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: "missing".into(),
                    ignore_value: true,
                    ..Default::default()
                })),
            },
        ],
        failure: vec![],
    };
    assert_eq!(
        s.apply(Op::Txn(bad)).unwrap_err(),
        ApiError::key_not_found()
    );
    assert_eq!(s.value_at("a", 0).as_deref(), Some("1"));
    assert_eq!(
        s.range("a", "", 0).unwrap().header.unwrap().revision,
        before
    );
}

#[test]
fn a_revoke_deletes_the_keys_still_on_the_lease_in_one_revision() {
    let s = Store::new();
    let grant = s
        .apply(Op::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 42 }))
        .unwrap();
    assert!(matches!(grant, Applied::LeaseGrant(ref g) if g.id == 42 && g.ttl == 5));
    let dup = s.apply(Op::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 42 }));
    assert_eq!(dup.unwrap_err().message, "etcdserver: lease already exists");
    let leased = |k: &str, lease: i64| {
        Op::Put(PutRequest {
            key: k.into(),
            value: "v".into(),
            lease,
            ..Default::default()
        })
    };
    s.apply(leased("l/a", 42)).unwrap();
    s.apply(leased("l/b", 42)).unwrap();
    s.apply(leased("l/moved", 42)).unwrap();
    // Re-put without the lease: the key leaves the lease.
    s.apply(leased("l/moved", 0)).unwrap();
    let before = s.range("l/", "l0", 0).unwrap().header.unwrap().revision;
    s.apply(Op::LeaseRevoke(LeaseRevokeRequest { id: 42 }))
        .unwrap();
    let after = s.range("l/", "l0", 0).unwrap();
    let keys: Vec<_> = after.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b"l/moved".to_vec()]);
    assert_eq!(
        after.header.unwrap().revision,
        before + 1,
        "both deletes share one revision"
    );
    assert_eq!(
        s.apply(Op::LeaseRevoke(LeaseRevokeRequest { id: 42 }))
            .unwrap_err(),
        ApiError::lease_not_found()
    );
    assert_eq!(
        s.apply(leased("l/c", 42)).unwrap_err(),
        ApiError::lease_not_found()
    );
    assert!(super::lease::all_leases(&s.db).unwrap().is_empty());
    assert!(super::lease::lease_keys(&s.db, 42).unwrap().is_empty());
}

#[test]
fn a_command_checked_against_an_older_auth_state_is_refused_while_auth_is_on() {
    use crate::proto::raftkvpb::{auth_change, AuthChange, AuthStamp};
    let s = Store::new();
    let stamped_put = |revision: u64| {
        let mut applier = Applier::new(&s.db);
        let result = applier.apply(&Command {
            op: Some(Op::Put(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
            stamp: Some(AuthStamp {
                revision,
                user: "alice".into(),
            }),
        });
        s.db.write(applier.take_batch()).unwrap();
        result.result.unwrap()
    };
    // Auth off: any stamp applies (nothing is checked while auth is off).
    assert!(matches!(stamped_put(0), Applied::Put(_)));

    let change = |op| Op::Auth(AuthChange { op: Some(op) });
    s.apply(change(auth_change::Op::RoleAdd(AuthRoleAddRequest {
        name: "root".into(),
    })))
    .unwrap();
    s.apply(change(auth_change::Op::UserAdd(AuthUserAddRequest {
        name: "root".into(),
        ..Default::default()
    })))
    .unwrap();
    s.apply(change(auth_change::Op::UserGrantRole(
        AuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into(),
        },
    )))
    .unwrap();
    s.apply(change(auth_change::Op::Enable(AuthEnableRequest {})))
        .unwrap();
    let now = crate::store::auth::revision(&s.db);
    match stamped_put(now - 1) {
        Applied::Error(e) => assert_eq!(
            ApiError::from(e),
            crate::store::auth::old_revision(),
            "the wrong refusal"
        ),
        other => panic!("a stale stamp applied: {other:?}"),
    }
    assert!(matches!(stamped_put(now), Applied::Put(_)));
}

#[test]
fn a_lease_grant_without_an_id_is_refused_not_fatal() {
    let s = Store::new();
    let refused = s.apply(Op::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 0 }));
    match refused {
        Err(e) => assert_eq!(e.code, tonic::Code::InvalidArgument, "{e:?}"),
        other => panic!("a lease without an id was granted: {other:?}"),
    }
}

#[test]
fn a_limited_range_counts_every_key_but_returns_its_page() {
    let s = Store::new();
    for i in 0..10 {
        s.put(&format!("p/{i}"), "v");
    }
    let at_five = s.put("p/0", "again") - 1;
    s.put("q", "outside");
    let page = |revision: i64, limit: i64, count_only: bool| {
        Mvcc::new(s.db.clone())
            .range(&RangeRequest {
                key: b"p/".to_vec(),
                range_end: b"p0".to_vec(),
                revision,
                limit,
                count_only,
                ..Default::default()
            })
            .unwrap()
    };
    for revision in [0, at_five] {
        let r = page(revision, 3, false);
        let keys: Vec<&[u8]> = r.kvs.iter().map(|kv| kv.key.as_slice()).collect();
        assert_eq!(keys, [b"p/0", b"p/1", b"p/2"], "at revision {revision}");
        assert_eq!((r.count, r.more), (10, true), "at revision {revision}");
        let all = page(revision, 10, false);
        assert_eq!((all.kvs.len(), all.count, all.more), (10, 10, false));
        let counted = page(revision, 0, true);
        assert_eq!((counted.kvs.len(), counted.count), (0, 10));
    }
    assert_eq!(page(0, 1, false).kvs[0].value, b"again");
    assert_eq!(page(at_five, 1, false).kvs[0].value, b"v");
}
