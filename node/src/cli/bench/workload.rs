//! What one benchmark client sends: the workloads, the keys they touch, and one
//! request of each kind over the etcd v3 API (so the same client drives etcd).

use std::collections::HashMap;

use rand::Rng;
use tonic::transport::Channel;

use crate::proto::etcdserverpb::compare::CompareResult;
use crate::proto::etcdserverpb::compare::CompareTarget;
use crate::proto::etcdserverpb::compare::TargetUnion;
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::response_op::Response;
use crate::proto::etcdserverpb::Compare;
use crate::proto::etcdserverpb::PutRequest;
use crate::proto::etcdserverpb::RangeRequest;
use crate::proto::etcdserverpb::RequestOp;
use crate::proto::etcdserverpb::TxnRequest;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Put a random key of the key space.
    Put,
    /// Range (get) a random key; linearizable unless --serializable.
    Range,
    /// Compare-and-swap: put a key only if its mod revision is the one this
    /// client last saw, else read it (one Txn either way).
    Txn,
    /// Ranges and puts, in the proportion --read-ratio.
    Mixed,
}

/// The shape of the requests: keys, values, read consistency.
#[derive(Clone, Debug)]
pub struct Shape {
    pub key_size: usize,
    pub value_size: usize,
    pub key_space: u64,
    pub serializable: bool,
    /// Fraction of requests that are reads (mixed workload only).
    pub read_ratio: f64,
}

impl Shape {
    /// Check that every key of the key space fits in `key_size` bytes.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.key_space == 0 {
            anyhow::bail!("--key-space must be at least 1");
        }
        let digits = (self.key_space - 1).to_string().len();
        if digits > self.key_size {
            anyhow::bail!(
                "--key-size {} is too small for --key-space {} (needs {digits} bytes)",
                self.key_size,
                self.key_space
            );
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            anyhow::bail!("--read-ratio must be between 0 and 1");
        }
        Ok(())
    }
}

/// Key number `n` of the key space: its decimal digits, zero-padded to
/// `key_size` bytes (printable, so a run can be inspected with etcdctl).
pub fn key(n: u64, key_size: usize) -> Vec<u8> {
    format!("{n:0key_size$}").into_bytes()
}

/// How one request ended, besides its latency.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// A compare-and-swap whose compare failed (not an error: another client
    /// won the race, and this one learned the key's new revision).
    CasFailed,
}

/// One benchmark client: a connection to use and what it knows of the keys.
pub struct Client {
    kv: KvClient<Channel>,
    shape: Shape,
    value: Vec<u8>,
    /// Mod revision this client last saw per key, for compare-and-swap.
    seen_revision: HashMap<u64, i64>,
}

impl Client {
    pub fn new(channel: Channel, shape: Shape) -> Self {
        let value = vec![b'v'; shape.value_size];
        Self {
            kv: KvClient::new(channel),
            shape,
            value,
            seen_revision: HashMap::new(),
        }
    }

    /// Send one request of `workload` and wait for its answer.
    pub async fn one(&mut self, workload: Workload) -> Result<Outcome, tonic::Status> {
        let n = rand::rng().random_range(0..self.shape.key_space);
        match workload {
            Workload::Put => self.put(n).await,
            Workload::Range => self.range(n).await,
            Workload::Txn => self.cas(n).await,
            Workload::Mixed => {
                if rand::rng().random_bool(self.shape.read_ratio) {
                    self.range(n).await
                } else {
                    self.put(n).await
                }
            }
        }
    }

    async fn put(&mut self, n: u64) -> Result<Outcome, tonic::Status> {
        self.kv
            .put(PutRequest {
                key: key(n, self.shape.key_size),
                value: self.value.clone(),
                ..Default::default()
            })
            .await?;
        Ok(Outcome::Done)
    }

    async fn range(&mut self, n: u64) -> Result<Outcome, tonic::Status> {
        self.kv
            .range(RangeRequest {
                key: key(n, self.shape.key_size),
                serializable: self.shape.serializable,
                ..Default::default()
            })
            .await?;
        Ok(Outcome::Done)
    }

    async fn cas(&mut self, n: u64) -> Result<Outcome, tonic::Status> {
        let key = key(n, self.shape.key_size);
        let expected = self.seen_revision.get(&n).copied().unwrap_or(0);
        let unchanged = Compare {
            key: key.clone(),
            target: CompareTarget::Mod as i32,
            result: CompareResult::Equal as i32,
            target_union: Some(TargetUnion::ModRevision(expected)),
            ..Default::default()
        };
        let put = RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.clone(),
                value: self.value.clone(),
                ..Default::default()
            })),
        };
        let read = RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key,
                ..Default::default()
            })),
        };
        let resp = self
            .kv
            .txn(TxnRequest {
                compare: vec![unchanged],
                success: vec![put],
                failure: vec![read],
            })
            .await?
            .into_inner();
        if resp.succeeded {
            // The put's revision is the transaction's: the header's.
            let rev = resp.header.map_or(0, |h| h.revision);
            self.seen_revision.insert(n, rev);
            return Ok(Outcome::Done);
        }
        let current = resp
            .responses
            .into_iter()
            .find_map(|r| match r.response {
                Some(Response::ResponseRange(range)) => {
                    Some(range.kvs.first().map_or(0, |kv| kv.mod_revision))
                }
                _ => None,
            })
            .unwrap_or(0);
        self.seen_revision.insert(n, current);
        Ok(Outcome::CasFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(key_size: usize, key_space: u64) -> Shape {
        Shape {
            key_size,
            value_size: 256,
            key_space,
            serializable: false,
            read_ratio: 0.5,
        }
    }

    #[test]
    fn keys_are_padded_to_the_key_size() {
        assert_eq!(key(42, 8), b"00000042".to_vec());
        assert_eq!(key(0, 3), b"000".to_vec());
    }

    #[test]
    fn key_space_must_fit_the_key_size() {
        assert!(shape(8, 100_000_000).validate().is_ok());
        let err = shape(8, 100_000_001).validate().unwrap_err();
        assert!(err.to_string().contains("too small"), "{err}");
        assert!(shape(8, 0).validate().is_err());
        let mut bad_ratio = shape(8, 10);
        bad_ratio.read_ratio = 1.5;
        assert!(bad_ratio.validate().is_err());
    }
}
