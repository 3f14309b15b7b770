//! The `raftkv` binary run as a short-lived command: client subcommands (`put`,
//! `get`, `member list`, ...) and `serve` invocations that must refuse to start.

use crate::binaries::raftkv_bin;
use crate::command::{self, CmdOutput};
use anyhow::Result;
use std::path::PathBuf;
use std::time::Duration;

/// Run `raftkv ARGS...` exactly as given (no `--endpoints` added), with no
/// `RAFTKV_*` variables in its environment (every flag also reads one).
pub async fn raftkv(args: &[&str]) -> Result<CmdOutput> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    command::run(
        &raftkv_bin()?,
        &args,
        &[],
        &["RAFTKV_"],
        None,
        Duration::from_secs(30),
    )
    .await
}

/// The raftkv client subcommands pointed at fixed endpoints.
#[derive(Debug, Clone)]
pub struct RaftkvCli {
    bin: PathBuf,
    endpoints: String,
}

impl RaftkvCli {
    /// `endpoints` are `127.0.0.1:PORT` client endpoints.
    pub fn new(endpoints: &[String]) -> Result<RaftkvCli> {
        Ok(RaftkvCli {
            bin: raftkv_bin()?,
            endpoints: endpoints.join(","),
        })
    }

    /// Run `raftkv ARGS... --endpoints E`; the result may be a failure, see
    /// [`CmdOutput::ok`]. `--endpoints` goes last, after the subcommand and its
    /// arguments, where a user would type it.
    pub async fn run(&self, args: &[&str]) -> Result<CmdOutput> {
        let mut full: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        full.push("--endpoints".to_string());
        full.push(self.endpoints.clone());
        command::run(
            &self.bin,
            &full,
            &[],
            &["RAFTKV_"],
            None,
            Duration::from_secs(30),
        )
        .await
    }
}
