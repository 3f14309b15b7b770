//! Small key-value helpers over `etcd-client` that several test files need:
//! reading one value, reading a whole prefix as a map, and the store revision from
//! a response header.

use anyhow::{bail, Context, Result};
use etcd_client::{Client, GetOptions, KeyValue, ResponseHeader};
use std::collections::BTreeMap;

/// The store revision in a response header (etcd always sends a header).
pub fn revision(header: Option<&ResponseHeader>) -> Result<i64> {
    match header {
        Some(h) => Ok(h.revision()),
        None => bail!("response has no header"),
    }
}

/// Key and value of a KeyValue as UTF-8 strings.
pub fn kv_strings(kv: &KeyValue) -> Result<(String, String)> {
    Ok((
        kv.key_str().context("key is not UTF-8")?.to_string(),
        kv.value_str().context("value is not UTF-8")?.to_string(),
    ))
}

/// The value of `key` (linearizable read), `None` if absent.
pub async fn get_value(client: &mut Client, key: &str) -> Result<Option<String>> {
    get_value_with(client, key, None).await
}

/// The value of `key` read with `serializable` set (the member's local state).
pub async fn get_value_serializable(client: &mut Client, key: &str) -> Result<Option<String>> {
    get_value_with(client, key, Some(GetOptions::new().with_serializable())).await
}

async fn get_value_with(
    client: &mut Client,
    key: &str,
    options: Option<GetOptions>,
) -> Result<Option<String>> {
    let resp = client
        .get(key, options)
        .await
        .with_context(|| format!("get {key:?}"))?;
    match resp.kvs() {
        [] => Ok(None),
        [kv] => Ok(Some(kv_strings(kv)?.1)),
        many => bail!("get {key:?} returned {} kvs", many.len()),
    }
}

/// Every key under `prefix` with its value (linearizable read), and the header
/// revision of that read.
pub async fn get_prefix(
    client: &mut Client,
    prefix: &str,
) -> Result<(BTreeMap<String, String>, i64)> {
    let resp = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .with_context(|| format!("get --prefix {prefix:?}"))?;
    let mut map = BTreeMap::new();
    for kv in resp.kvs() {
        let (k, v) = kv_strings(kv)?;
        map.insert(k, v);
    }
    Ok((map, revision(resp.header())?))
}

/// Compare an expected key/value map with what was read; the error lists the
/// first differences.
pub fn diff_maps(
    expected: &BTreeMap<String, String>,
    actual: &BTreeMap<String, String>,
) -> Result<()> {
    let mut problems = Vec::new();
    for (k, v) in expected {
        match actual.get(k) {
            None => problems.push(format!("{k:?} missing (expected {v:?})")),
            Some(a) if a != v => problems.push(format!("{k:?} = {a:?}, expected {v:?}")),
            Some(_) => {}
        }
    }
    for k in actual.keys().filter(|k| !expected.contains_key(*k)) {
        problems.push(format!("{k:?} present but not expected"));
    }
    if !problems.is_empty() {
        let total = problems.len();
        problems.truncate(10);
        bail!("{total} differences, first ones: {}", problems.join("; "));
    }
    Ok(())
}
