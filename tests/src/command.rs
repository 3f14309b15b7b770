//! Running a short-lived command (etcdctl, a `raftkv` client subcommand, a `raftkv
//! serve` that should refuse to start) and capturing what it printed.
//!
//! Every run has a deadline: a command that should fail fast but instead starts
//! serving, or a client that hangs on an unreachable cluster, must fail the test
//! rather than hang it.

use anyhow::{bail, Context, Result};
use std::fmt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// What a finished command printed, and how it exited.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// The command line, for error messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code; `None` if a signal ended the process.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// `self` if the command exited 0, else an error showing everything it printed.
    pub fn ok(self) -> Result<CmdOutput> {
        if !self.success() {
            bail!("command failed: {self}");
        }
        Ok(self)
    }

    /// `self` if the command failed, else an error showing everything it printed.
    pub fn failed(self) -> Result<CmdOutput> {
        if self.success() {
            bail!("command unexpectedly succeeded: {self}");
        }
        Ok(self)
    }
}

impl fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// Run `program args...` with `envs` set (and every variable named in
/// `remove_env_prefixes` removed), feed it `stdin`, and wait at most `timeout`.
pub async fn run(
    program: &Path,
    args: &[String],
    envs: &[(&str, &str)],
    remove_env_prefixes: &[&str],
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<CmdOutput> {
    let command_line = format!("{} {}", program.display(), args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if remove_env_prefixes.iter().any(|p| name.starts_with(p)) {
            cmd.env_remove(name.as_ref());
        }
    }
    for (name, value) in envs {
        cmd.env(name, value);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning `{command_line}`"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("child stdin was not piped")?;
        pipe.write_all(input.as_bytes())
            .await
            .with_context(|| format!("writing stdin of `{command_line}`"))?;
        // Dropping the pipe closes it: the command sees EOF.
    }
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(output) => output.with_context(|| format!("waiting for `{command_line}`"))?,
        // The child is killed when the future holding it is dropped (kill_on_drop).
        Err(_) => bail!("`{command_line}` did not finish within {timeout:?}; killed it"),
    };
    Ok(CmdOutput {
        command: command_line,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}
