//! Polling with a deadline.
//!
//! A cluster converges in its own time, so tests never sleep for a fixed while and
//! hope: they poll a condition every [`POLL_INTERVAL`] until it holds or a generous
//! deadline passes (CI is a loaded 2-core machine). When the deadline passes the
//! error says what was awaited and what was last seen, which is usually enough to
//! tell a slow cluster from a wrong one.

use anyhow::{bail, Result};
use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often conditions are polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// A started or restarted member answers `/readyz` with 200 within this.
pub const READY_TIMEOUT: Duration = Duration::from_secs(45);
/// A leader is elected (or re-elected after a kill) within this.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A write is visible on every member, a learner catches up, ... within this.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// A member exits after SIGTERM within this, else it gets SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A point in time by which `what` must have happened.
pub struct Deadline {
    start: Instant,
    end: Instant,
    what: String,
}

impl Deadline {
    pub fn after(timeout: Duration, what: impl Into<String>) -> Deadline {
        let start = Instant::now();
        Deadline {
            start,
            end: start + timeout,
            what: what.into(),
        }
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.end
    }

    /// Sleep one poll interval, or fail if the deadline has passed. `last_seen`
    /// describes the state observed by the poll that just failed.
    pub async fn tick(&self, last_seen: impl Display) -> Result<()> {
        if self.passed() {
            bail!(
                "timed out after {:?} waiting for {}; last seen: {}",
                self.start.elapsed(),
                self.what,
                last_seen
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        Ok(())
    }
}

/// Poll `check` until it returns `Ok(Some(value))`. `Ok(None)` means "not yet";
/// `Err` also means "not yet" (nodes refuse requests while they start or elect)
/// and is kept to explain a timeout.
pub async fn until<T, F, Fut>(timeout: Duration, what: impl Into<String>, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Deadline::after(timeout, what);
    loop {
        let last_seen = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "condition not met".to_string(),
            Err(err) => format!("error: {err:#}"),
        };
        deadline.tick(last_seen).await?;
    }
}
