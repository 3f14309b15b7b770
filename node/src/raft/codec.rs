//! Binary encoding of openraft's own types (log entries, votes, RPC messages).
//!
//! openraft's types are serde types; raftkv stores and sends them with `postcard`,
//! a compact, stable binary format. Application payloads inside them are
//! protobuf bytes (see [`super::Command`]).

use std::fmt;
use std::io;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encode a value; encoding our in-memory types cannot fail except on a bug.
pub fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Decode a value, reporting corrupt input as `InvalidData`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot decode {}: {e}", std::any::type_name::<T>()),
        )
    })
}

/// Accepts a byte string in any of the shapes serde formats use for it.
pub(crate) struct BytesVisitor;

impl<'de> serde::de::Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::PutRequest;
    use crate::proto::raftkvpb;
    use crate::raft::Command;

    #[test]
    fn command_round_trips_through_postcard_and_json() {
        let cmd = Command::new(raftkvpb::command::Op::Put(PutRequest {
            key: b"k\0ey".to_vec(),
            value: vec![0, 255, 7],
            ..Default::default()
        }));
        let bytes = encode(&cmd).unwrap();
        assert_eq!(decode::<Command>(&bytes).unwrap(), cmd);
        let json = serde_json::to_vec(&cmd).unwrap();
        assert_eq!(serde_json::from_slice::<Command>(&json).unwrap(), cmd);
    }

    #[test]
    fn corrupt_bytes_are_invalid_data_not_a_panic() {
        let err = decode::<Command>(&[0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
