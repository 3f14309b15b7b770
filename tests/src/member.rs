//! One `raftkv serve` process: start, kill, stop, restart, and the addresses to
//! reach it.
//!
//! A member keeps its command line, so a restart runs exactly the same command on
//! the same data dir: what a restart must survive is the node's own recovery, not
//! a changed configuration. Its stdout and stderr go to a log file in its dir
//! (appended across restarts), which the cluster prints when a test fails.
//!
//! A member of a TLS cluster also knows the client files to reach it with, so
//! [`Member::client`] and [`Member::status`] talk TLS to it.

use crate::grpc;
use crate::http;
use crate::ports::Ports;
use crate::tls::ClientTls;
use crate::wait::{Deadline, READY_TIMEOUT, STOP_TIMEOUT};
use anyhow::{bail, Context, Result};
use etcd_client::{Client, StatusResponse};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// A raftkv member process (running or not).
pub struct Member {
    /// The Raft member id (`--id`).
    pub id: u64,
    /// The member name (`--name`).
    pub name: String,
    pub ports: Ports,
    dir: PathBuf,
    bin: PathBuf,
    args: Vec<String>,
    /// The network namespace the process runs in (`ip netns exec`), if not the test's own.
    netns: Option<String>,
    /// Environment the process gets on top of the test's (e.g. a power-cut shim).
    env: Vec<(String, String)>,
    child: Option<Child>,
    last_exit: Option<ExitStatus>,
    /// Started and not deliberately killed or stopped since: if such a member is
    /// not running, it crashed.
    expected_running: bool,
    /// What the harness's clients present and trust on its client port, in a TLS cluster.
    client_tls: Option<ClientTls>,
}

/// How a member's process is launched, besides its binary and dir.
pub(crate) struct Launch {
    /// Every flag, including `--data-dir` (see [`Member::data_dir_of`]).
    pub args: Vec<String>,
    /// The network namespace to run in, if not the test's own.
    pub netns: Option<String>,
    /// Environment on top of the test's.
    pub env: Vec<(String, String)>,
}

impl Member {
    /// Spawn `bin` as member `id`/`name` as `launch` says, logging to a file in `dir`.
    pub(crate) fn start(
        bin: &Path,
        id: u64,
        name: &str,
        dir: PathBuf,
        ports: Ports,
        launch: Launch,
    ) -> Result<Member> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut member = Member {
            id,
            name: name.to_string(),
            ports,
            dir,
            bin: bin.to_path_buf(),
            args: launch.args,
            netns: launch.netns,
            env: launch.env,
            child: None,
            last_exit: None,
            expected_running: false,
            client_tls: None,
        };
        member.spawn()?;
        Ok(member)
    }

    /// Reach this member's client port over TLS with `tls` (`None`: plaintext).
    pub(crate) fn with_client_tls(mut self, tls: Option<ClientTls>) -> Member {
        self.client_tls = tls;
        self
    }

    /// The client files the harness reaches this member with, in a TLS cluster.
    pub fn client_tls(&self) -> Option<&ClientTls> {
        self.client_tls.as_ref()
    }

    /// The data dir of a member whose dir is `member_dir`.
    pub(crate) fn data_dir_of(member_dir: &Path) -> PathBuf {
        member_dir.join("data")
    }

    fn spawn(&mut self) -> Result<()> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))?;
        writeln!(
            log,
            "=== harness: starting {} {}",
            self.bin.display(),
            self.args.join(" ")
        )?;
        // `ip netns exec` enters the namespace and execs the binary: same pid, so
        // signals and the parent-death signal below reach raftkv itself.
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(&self.bin);
                cmd
            }
            None => Command::new(&self.bin),
        };
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        // Every flag also reads RAFTKV_<FLAG>: nothing from our environment may
        // change the command line we think we are running.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RAFTKV_") {
                cmd.env_remove(&name);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        // If the test binary dies without running destructors (SIGKILL, abort), the
        // kernel kills the member too. The signal follows the spawning *thread*;
        // members are spawned from the test's own thread, which outlives them.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {} for member {}", self.bin.display(), self.name))?;
        self.child = Some(child);
        self.last_exit = None;
        self.expected_running = true;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self) -> PathBuf {
        Self::data_dir_of(&self.dir)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    /// The full `raftkv` command line (after the binary) this member runs with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// `HOST:PORT` for etcd-client and etcdctl.
    pub fn client_endpoint(&self) -> String {
        self.ports.client_endpoint()
    }

    /// `http://HOST:PORT` (`https://` in a TLS cluster), as advertised in the member list.
    pub fn client_url(&self) -> String {
        self.ports.client_url()
    }

    /// `HOST:PORT` of the peer listener.
    pub fn peer_endpoint(&self) -> String {
        self.ports.peer_endpoint()
    }

    pub fn peer_url(&self) -> String {
        self.ports.peer_url()
    }

    pub fn metrics_url(&self) -> String {
        self.ports.metrics_url()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is alive (reaping it if it has exited).
    pub fn is_running(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.last_exit = Some(status);
                self.child = None;
                false
            }
            Err(_) => false,
        }
    }

    /// Started and not deliberately killed or stopped since (it may have crashed:
    /// see [`Member::is_running`]).
    pub fn expected_running(&self) -> bool {
        self.expected_running
    }

    /// How the process last exited, if it has.
    pub fn last_exit(&self) -> Option<ExitStatus> {
        self.last_exit
    }

    /// SIGKILL the process and reap it. A member that is not running is left alone.
    pub fn kill9(&mut self) -> Result<()> {
        self.expected_running = false;
        if let Some(mut child) = self.child.take() {
            // kill() fails only if the process was already reaped; wait() then reports it.
            let _ = child.kill();
            let status = child
                .wait()
                .with_context(|| format!("reaping {} after SIGKILL", self.name))?;
            self.last_exit = Some(status);
        }
        Ok(())
    }

    /// SIGTERM, wait up to [`STOP_TIMEOUT`], SIGKILL if still running. Returns how
    /// the process exited (by SIGKILL if it did not stop in time).
    pub async fn stop(&mut self) -> Result<ExitStatus> {
        self.signal_term()?;
        self.wait_exit(STOP_TIMEOUT).await
    }

    /// Send SIGTERM without waiting (see [`Member::wait_exit`]).
    pub fn signal_term(&mut self) -> Result<()> {
        self.expected_running = false;
        self.signal(libc::SIGTERM, "SIGTERM")
    }

    /// SIGSTOP: the process is frozen (it neither answers nor times out) until
    /// [`Member::resume`]. It still counts as running.
    pub fn pause(&mut self) -> Result<()> {
        self.signal(libc::SIGSTOP, "SIGSTOP")
    }

    /// SIGCONT after [`Member::pause`].
    pub fn resume(&mut self) -> Result<()> {
        self.signal(libc::SIGCONT, "SIGCONT")
    }

    fn signal(&mut self, signal: libc::c_int, signal_name: &str) -> Result<()> {
        if let Some(pid) = self.pid() {
            let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
            // SAFETY: plain syscall on a pid we spawned and have not reaped.
            if unsafe { libc::kill(pid, signal) } == -1 {
                let err = std::io::Error::last_os_error();
                bail!("{signal_name} to {} (pid {pid}): {err}", self.name);
            }
        }
        Ok(())
    }

    /// Wait up to `timeout` for the process to exit, then SIGKILL it.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Deadline::after(timeout, format!("{} to exit", self.name));
        while self.is_running() {
            if deadline.passed() {
                eprintln!(
                    "harness: {} still running {timeout:?} after SIGTERM; sending SIGKILL",
                    self.name
                );
                self.kill9()?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.last_exit
            .with_context(|| format!("{} was never started", self.name))
    }

    /// Start the process again with exactly the same command line and data dir.
    pub fn restart(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("restart of {}: it is still running", self.name);
        }
        self.spawn()
    }

    /// The status code of `GET /readyz` on the metrics listener.
    pub async fn readyz(&self) -> Result<u16> {
        Ok(http::get(&self.ports.metrics_addr(), "/readyz")
            .await?
            .status)
    }

    /// The value of the unlabelled sample `name` in `GET /metrics` (Prometheus
    /// text), `None` if absent.
    pub async fn metric(&self, name: &str) -> Result<Option<f64>> {
        let resp = http::get(&self.ports.metrics_addr(), "/metrics").await?;
        if resp.status != 200 {
            bail!("GET {}/metrics: status {}", self.metrics_url(), resp.status);
        }
        Ok(resp.body.lines().find_map(|line| {
            let (sample, value) = line.split_once(' ')?;
            (sample == name).then(|| value.trim().parse().ok())?
        }))
    }

    /// Poll `GET /readyz` until it answers 200. Fails at once if the process exits.
    pub async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Deadline::after(
            READY_TIMEOUT,
            format!(
                "{} to answer GET {}/readyz with 200",
                self.name,
                self.metrics_url()
            ),
        );
        loop {
            if !self.is_running() {
                bail!(
                    "{} exited ({}) before becoming ready; log tail:\n{}",
                    self.name,
                    self.last_exit
                        .map_or("never started".to_string(), |s| s.to_string()),
                    self.log_tail(30)
                );
            }
            let last_seen = match self.readyz().await {
                Ok(200) => return Ok(()),
                Ok(code) => format!("status {code}"),
                Err(err) => format!("{err:#}"),
            };
            deadline.tick(last_seen).await?;
        }
    }

    /// An etcd-client talking to this member only (over TLS in a TLS cluster).
    pub async fn client(&self) -> Result<Client> {
        grpc::connect_with(
            &[self.client_endpoint()],
            self.client_tls.as_ref(),
            grpc::REQUEST_TIMEOUT,
        )
        .await
    }

    /// Maintenance.Status of this member (3 s limit).
    pub async fn status(&self) -> Result<StatusResponse> {
        let mut client = grpc::connect_with(
            &[self.client_endpoint()],
            self.client_tls.as_ref(),
            Duration::from_secs(3),
        )
        .await?;
        client
            .status()
            .await
            .with_context(|| format!("Maintenance.Status on {}", self.name))
    }

    /// The last `lines` lines of the member's log file.
    pub fn log_tail(&self, lines: usize) -> String {
        match read_tail(&self.log_path(), lines) {
            Ok(tail) => tail,
            Err(err) => format!("(cannot read {}: {err:#})", self.log_path().display()),
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// The last `lines` lines of a file, reading at most its last 256 KiB.
fn read_tail(path: &Path, lines: usize) -> Result<String> {
    const MAX: u64 = 256 * 1024;
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
    let mut raw = Vec::new();
    file.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let all: Vec<&str> = text.lines().collect();
    Ok(all[all.len().saturating_sub(lines)..].join("\n"))
}
