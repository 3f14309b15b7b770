//! raftkv's own view of a member (`raftkv member status`, Admin.MemberStatus),
//! and whole-store dumps for comparing two clusters key by key.

use crate::cli::RaftkvCli;
use anyhow::{Context, Result};
use etcd_client::{Client, GetOptions};
use std::collections::BTreeMap;

/// `raftkv member status` of the member at `endpoint`, as `name -> value`.
pub async fn member_status(endpoint: &str) -> Result<BTreeMap<String, String>> {
    let out = RaftkvCli::new(&[endpoint.to_string()])?
        .run(&["member", "status"])
        .await?
        .ok()?;
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

/// One field of [`member_status`] as a number.
pub fn field_u64(status: &BTreeMap<String, String>, name: &str) -> Result<u64> {
    status
        .get(name)
        .with_context(|| format!("member status has no {name}: {status:?}"))?
        .parse()
        .with_context(|| format!("member status {name} is not a number: {status:?}"))
}

/// Every key with its value, create/mod revision and version, read
/// serializably from the member `client` talks to, and that read's revision.
pub type Dump = (Vec<(Vec<u8>, Vec<u8>, i64, i64, i64)>, i64);

pub async fn dump(client: &mut Client) -> Result<Dump> {
    let resp = client
        .get(
            vec![0u8],
            Some(GetOptions::new().with_from_key().with_serializable()),
        )
        .await
        .context("range over every key")?;
    let rows = resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key().to_vec(),
                kv.value().to_vec(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
            )
        })
        .collect();
    Ok((rows, crate::kv::revision(resp.header())?))
}
