//! A Range's memory is its page, not its prefix (issue 16, item 8, part): a
//! member decoded every key in range before applying the limit, so one
//! `get --prefix --limit 1` over a large prefix (any paginated list, such as
//! kube-apiserver's) held the whole prefix in memory at once.
//!
//! Measured as the member's peak resident memory (`VmHWM`, reset through
//! `/proc/PID/clear_refs` just before the read): with 150 values of 1 MiB
//! under the prefix, a page of one key must not raise the peak by anything
//! near 150 MiB.

use anyhow::{bail, Context, Result};
use etcd_client::GetOptions;
use raftkv_tests::ClusterOptions;

const VALUES: usize = 150;
const VALUE_BYTES: usize = 1 << 20;
/// Far below the 150 MiB the whole prefix takes, far above a page's needs.
const MOST_GROWTH_KIB: u64 = 40 * 1024;

fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("bad line {line:?}"))?;
    Ok(kib.parse()?)
}

/// The rise of the member's peak memory over its current memory while `read` runs.
async fn peak_rise<F, T>(pid: u32, read: F) -> Result<u64>
where
    F: std::future::Future<Output = Result<T>>,
{
    // "5" resets the peak resident set size to the current one.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .context("resetting the member's peak memory")?;
    let before = status_kib(pid, "VmRSS:")?;
    read.await?;
    Ok(status_kib(pid, "VmHWM:")?.saturating_sub(before))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limited_range_holds_its_page_not_the_prefix() -> Result<()> {
    let cluster = ClusterOptions::new().start(1).await?;
    let member = &cluster.members()[0];
    let pid = member.pid().context("the member is not running")?;
    let mut client = cluster.client().await?;
    let value = vec![b'x'; VALUE_BYTES];
    for i in 0..VALUES {
        client
            .put(format!("big/{i:03}"), value.clone(), None)
            .await?;
    }
    let revision = client
        .put("big/zzz", "small", None)
        .await?
        .header()
        .context("no header")?
        .revision();

    // Each read is checked on its own: a regression of either shows, though
    // memory a first regressed read freed may hide a second one (the
    // allocator keeps it, so the second needs no new pages).
    let page = GetOptions::new().with_prefix().with_limit(1);
    let mut reader = client.clone();
    let past = peak_rise(pid, async {
        let r = reader
            .get("big/", Some(page.clone().with_revision(revision - 1)))
            .await?;
        anyhow::ensure!(r.kvs().len() == 1 && r.count() == VALUES as i64 && r.more());
        Ok(())
    })
    .await?;
    let current = peak_rise(pid, async {
        let r = reader.get("big/", Some(page.clone())).await?;
        anyhow::ensure!(r.kvs().len() == 1 && r.count() == VALUES as i64 + 1 && r.more());
        Ok(())
    })
    .await?;
    println!("peak memory rise for one key of a {VALUES} MiB prefix: now {current} KiB, at a past revision {past} KiB");
    if current > MOST_GROWTH_KIB || past > MOST_GROWTH_KIB {
        bail!(
            "a one-key page of a {VALUES} MiB prefix raised the member's peak memory by {current} KiB \
             (now) and {past} KiB (at a past revision); at most {MOST_GROWTH_KIB} KiB expected"
        );
    }
    Ok(())
}
