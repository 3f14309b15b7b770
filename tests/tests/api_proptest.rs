//! Random and malformed requests against a live member: every one gets an answer
//! or a clean gRPC status (never Unknown, which is what a handler panic becomes,
//! and never Internal unless it is tonic's own "failed to decode" of bytes that
//! are not the message), and the member keeps serving afterwards.
//!
//! Well-formed but hostile requests go through the etcd-client crate (huge and
//! empty keys, inverted and odd ranges, future and negative revisions, deep and
//! wide txns, bad sort options). Bytes that no client library would send
//! (invalid UTF-8 in `string` fields, unknown enum values, truncated and random
//! protobuf) go through a raw gRPC call with a pass-through codec.

use anyhow::{Context, Result};
use bytes::{Buf, BufMut};
use etcd_client::{Client, Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use raftkv_tests::kv::get_value;
use raftkv_tests::Cluster;
use std::time::Duration;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

/// A gRPC status is clean unless it says a handler failed.
fn check_status(status: &tonic::Status, what: &str) -> std::result::Result<(), TestCaseError> {
    let decode_error =
        status.code() == tonic::Code::Internal && status.message().contains("decode");
    prop_assert!(
        status.code() != tonic::Code::Unknown
            && (status.code() != tonic::Code::Internal || decode_error),
        "{what}: unclean status {:?} {:?}",
        status.code(),
        status.message()
    );
    Ok(())
}

fn check_result<T>(
    result: std::result::Result<T, etcd_client::Error>,
    what: &str,
) -> std::result::Result<(), TestCaseError> {
    match result {
        Ok(_) => Ok(()),
        Err(etcd_client::Error::GRpcStatus(status)) => check_status(&status, what),
        Err(other) => Err(TestCaseError::fail(format!(
            "{what}: not a gRPC status: {other}"
        ))),
    }
}

/// The member still answers a write and a linearizable read.
async fn assert_alive(client: &mut Client) -> Result<()> {
    client
        .put("alive", "yes", None)
        .await
        .context("put after bad input")?;
    let value = get_value(client, "alive").await?;
    anyhow::ensure!(value.as_deref() == Some("yes"), "read back {value:?}");
    Ok(())
}

/// A request the etcd-client crate can express.
#[derive(Debug, Clone)]
enum Hostile {
    Put {
        key: Vec<u8>,
        value_len: usize,
    },
    Range {
        key: Vec<u8>,
        end: Vec<u8>,
        revision: i64,
        limit: i64,
        sort: (i32, i32),
    },
    Delete {
        key: Vec<u8>,
        end: Vec<u8>,
    },
    DeepTxn {
        depth: usize,
    },
    WideTxn {
        ops: usize,
    },
    Compact {
        revision: i64,
    },
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(vec![0u8]),
        proptest::collection::vec(any::<u8>(), 1..32),
        // Around and beyond --max-request-bytes (1.5 MiB).
        (1_000_000usize..2_000_000).prop_map(|n| vec![b'k'; n]),
    ]
}

fn hostile() -> impl Strategy<Value = Hostile> {
    prop_oneof![
        (
            key(),
            prop_oneof![Just(0usize), 0usize..100, 1_400_000usize..1_700_000]
        )
            .prop_map(|(key, value_len)| Hostile::Put { key, value_len }),
        (
            key(),
            key(),
            any::<i64>(),
            any::<i64>(),
            (-2i32..8, -2i32..8)
        )
            .prop_map(|(key, end, revision, limit, sort)| Hostile::Range {
                key,
                end,
                revision,
                limit,
                sort
            }),
        (key(), key()).prop_map(|(key, end)| Hostile::Delete { key, end }),
        (1usize..300).prop_map(|depth| Hostile::DeepTxn { depth }),
        (100usize..300).prop_map(|ops| Hostile::WideTxn { ops }),
        any::<i64>().prop_map(|revision| Hostile::Compact { revision }),
    ]
}

fn sort_order(n: i32) -> SortOrder {
    SortOrder::try_from(n).unwrap_or(SortOrder::Descend)
}

fn sort_target(n: i32) -> SortTarget {
    SortTarget::try_from(n).unwrap_or(SortTarget::Value)
}

async fn send_hostile(client: &mut Client, req: Hostile) -> std::result::Result<(), TestCaseError> {
    let what = format!("{req:?}").chars().take(120).collect::<String>();
    match req {
        Hostile::Put { key, value_len } => {
            check_result(client.put(key, vec![b'v'; value_len], None).await, &what)
        }
        Hostile::Range {
            key,
            end,
            revision,
            limit,
            sort,
        } => {
            let options = GetOptions::new()
                .with_range(end)
                .with_revision(revision)
                .with_limit(limit)
                .with_sort(sort_target(sort.1), sort_order(sort.0));
            check_result(client.get(key, Some(options)).await, &what)
        }
        Hostile::Delete { key, end } => {
            let options = etcd_client::DeleteOptions::new().with_range(end);
            check_result(client.delete(key, Some(options)).await, &what)
        }
        Hostile::DeepTxn { depth } => {
            let mut txn = Txn::new().and_then([TxnOp::put("deep", "bottom", None)]);
            for level in 0..depth {
                txn = Txn::new()
                    .when([Compare::version(
                        format!("deep{level}"),
                        CompareOp::Equal,
                        0,
                    )])
                    .and_then([TxnOp::txn(txn)]);
            }
            check_result(client.txn(txn).await, &what)
        }
        Hostile::WideTxn { ops } => {
            let puts: Vec<TxnOp> = (0..ops)
                .map(|i| TxnOp::put(format!("wide{i}"), "v", None))
                .collect();
            check_result(client.txn(Txn::new().and_then(puts)).await, &what)
        }
        Hostile::Compact { revision } => check_result(client.compact(revision, None).await, &what),
    }
}

#[test]
fn hostile_requests_get_clean_errors() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cluster = rt.block_on(Cluster::start(1))?;
    let client = rt.block_on(cluster.client())?;
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&hostile(), |req| {
            let mut client = client.clone();
            rt.block_on(async {
                send_hostile(&mut client, req).await?;
                assert_alive(&mut client)
                    .await
                    .map_err(|err| TestCaseError::fail(format!("member not serving: {err:#}")))
            })
        })
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    Ok(())
}

/// Sends and receives message bytes as they are: no protobuf on our side.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

async fn raw_call(
    endpoint: &str,
    method: &'static str,
    body: Vec<u8>,
) -> Result<std::result::Result<Vec<u8>, tonic::Status>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))?
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    Ok(grpc
        .unary(
            tonic::Request::new(body),
            PathAndQuery::from_static(method),
            RawCodec,
        )
        .await
        .map(tonic::Response::into_inner))
}

/// Protobuf field `field` with wire type 2 (bytes / string / message).
fn len_field(field: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(field << 3) | 2];
    let mut n = bytes.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(bytes);
    out
}

/// Protobuf field `field` with wire type 0 (varint), for small values.
fn varint_field(field: u8, value: u8) -> Vec<u8> {
    vec![field << 3, value & 0x7f]
}

const NOT_UTF8: &[u8] = b"\xff\xfe\xc3\x28name";

/// Hand-made messages no well-behaved client sends, with the method they go to.
fn malformed_messages() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        // AuthenticateRequest{name: <invalid UTF-8>, password: "x"}
        (
            "/etcdserverpb.Auth/Authenticate",
            [len_field(1, NOT_UTF8), len_field(2, b"x")].concat(),
        ),
        // AuthUserAddRequest{name: <invalid UTF-8>}
        ("/etcdserverpb.Auth/UserAdd", len_field(1, NOT_UTF8)),
        // AuthRoleAddRequest{name: <invalid UTF-8>}
        ("/etcdserverpb.Auth/RoleAdd", len_field(1, NOT_UTF8)),
        // MemberAddRequest{peerURLs: [<invalid UTF-8>]}
        ("/etcdserverpb.Cluster/MemberAdd", len_field(1, NOT_UTF8)),
        // RangeRequest{key: "k", sort_order: 99, sort_target: 77}
        (
            "/etcdserverpb.KV/Range",
            [len_field(1, b"k"), varint_field(5, 99), varint_field(6, 77)].concat(),
        ),
        // TxnRequest{compare: [{result: 99, target: 88, key: "k"}]}
        (
            "/etcdserverpb.KV/Txn",
            len_field(
                1,
                &[varint_field(1, 99), varint_field(2, 88), len_field(3, b"k")].concat(),
            ),
        ),
        // AlarmRequest{action: 42, alarm: 99}
        (
            "/etcdserverpb.Maintenance/Alarm",
            [varint_field(1, 42), varint_field(3, 99)].concat(),
        ),
        // PutRequest truncated in the middle of the key.
        ("/etcdserverpb.KV/Put", vec![0x0a, 0x10, b'a', b'b']),
        // A field number 0 (invalid tag).
        ("/etcdserverpb.KV/Range", vec![0x00, 0x01]),
        // LeaseGrantRequest{TTL: -1 as a 10-byte varint}
        (
            "/etcdserverpb.Lease/LeaseGrant",
            vec![
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ),
        // A method nobody serves.
        ("/etcdserverpb.KV/NoSuchMethod", len_field(1, b"k")),
    ]
}

#[test]
fn malformed_protobuf_gets_clean_errors() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cluster = rt.block_on(Cluster::start(1))?;
    let endpoint = cluster.members()[0].client_endpoint();
    let mut client = rt.block_on(cluster.client())?;
    for (method, body) in malformed_messages() {
        let answer = rt.block_on(raw_call(&endpoint, method, body.clone()))?;
        eprintln!(
            "{method} {body:02x?}: {:?}",
            answer.as_ref().map_err(|s| (s.code(), s.message()))
        );
        if let Err(status) = &answer {
            check_status(status, &format!("{method} {body:02x?}"))
                .map_err(|err| anyhow::anyhow!("{err}"))?;
        }
        rt.block_on(assert_alive(&mut client))
            .with_context(|| format!("after {method} {body:02x?}"))?;
    }
    // Random bytes to the KV methods.
    let methods = [
        "/etcdserverpb.KV/Range",
        "/etcdserverpb.KV/Put",
        "/etcdserverpb.KV/DeleteRange",
        "/etcdserverpb.KV/Txn",
        "/etcdserverpb.KV/Compact",
        "/etcdserverpb.Lease/LeaseGrant",
        "/etcdserverpb.Maintenance/HashKV",
    ];
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(
                0..methods.len(),
                proptest::collection::vec(any::<u8>(), 0..64),
            ),
            |(m, body)| {
                let mut client = client.clone();
                rt.block_on(async {
                    let answer = raw_call(&endpoint, methods[m], body.clone())
                        .await
                        .map_err(|err| TestCaseError::fail(format!("{err:#}")))?;
                    if let Err(status) = &answer {
                        check_status(status, &format!("{} {body:02x?}", methods[m]))?;
                    }
                    assert_alive(&mut client)
                        .await
                        .map_err(|err| TestCaseError::fail(format!("member not serving: {err:#}")))
                })
            },
        )
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    Ok(())
}
