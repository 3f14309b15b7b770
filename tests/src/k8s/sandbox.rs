//! Pod sandboxes and container processes (stand-in for a container runtime).
//!
//! A pod's sandbox is a network namespace `rkpod<pid>x<n>` (named in /run/netns by
//! `ip netns`) with loopback up and a veth whose host end is on the node's bridge,
//! an address from `--pod-cidr` and a default route via the bridge's host address,
//! as a CNI bridge plugin would make. Every container process (and every exec
//! probe or hook) is spawned into it with its own mount and UTS namespaces: in
//! the child, after fork and before exec, it joins the pod's network namespace,
//! unshares a private mount namespace, bind-mounts the container's volumes (and
//! the pod's /etc/hosts and /etc/resolv.conf) at their paths, sets the hostname,
//! changes to the working directory, asks for SIGKILL when the stand-in dies
//! (`PR_SET_PDEATHSIG`) and starts a new session (so a whole process group can be
//! signalled). Mounts therefore never appear in the host's mount table, and die
//! with the processes.
//!
//! What it does not do: no image root filesystem (the container sees the host's
//! files, with its volumes mounted over them), no PID or user namespaces, no
//! cgroups or resource limits, no seccomp or capabilities, no `runAsUser` (every
//! process runs as the stand-in's user, root). Mount points that do not exist on
//! the host are created there (empty directories or files), and removed again
//! at shutdown when still empty.
//!
//! `PR_SET_PDEATHSIG` follows the *thread* that forked: containers are spawned
//! from tokio's worker threads, which live as long as the stand-in's runtime
//! (never from `spawn_blocking` threads, which exit when idle).

use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::sync::Mutex;

/// The node's pod network: the bridge and an address pool.
pub struct Network {
    bridge: String,
    network: u32,
    prefix: u8,
    state_dir: PathBuf,
    used: Mutex<std::collections::BTreeSet<u32>>,
    counter: std::sync::atomic::AtomicU32,
}

/// A pod's network namespace and address.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub netns: String,
    pub ip: Ipv4Addr,
}

impl Sandbox {
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }
}

/// Parse `A.B.C.D/N` into (network, prefix); N must be 16..=30.
pub fn parse_cidr(cidr: &str) -> Result<(u32, u8)> {
    let (addr, prefix) = cidr
        .split_once('/')
        .with_context(|| format!("pod CIDR {cidr:?} is not ADDRESS/PREFIX"))?;
    let addr: Ipv4Addr = addr.parse().with_context(|| format!("pod CIDR {cidr:?}"))?;
    let prefix: u8 = prefix
        .parse()
        .with_context(|| format!("pod CIDR {cidr:?}"))?;
    if !(16..=30).contains(&prefix) {
        bail!("pod CIDR {cidr:?}: prefix must be 16..=30");
    }
    let mask = u32::MAX << (32 - prefix);
    Ok((u32::from(addr) & mask, prefix))
}

impl Network {
    pub fn new(bridge: &str, pod_cidr: &str, state_dir: &Path) -> Result<Network> {
        let (network, prefix) = parse_cidr(pod_cidr)?;
        Ok(Network {
            bridge: bridge.to_string(),
            network,
            prefix,
            state_dir: state_dir.to_path_buf(),
            used: Mutex::new(Default::default()),
            counter: Default::default(),
        })
    }

    /// The bridge's address: the first host of the pod CIDR.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1)
    }

    /// Create the bridge with the host address if it does not exist.
    pub fn ensure_bridge(&self) -> Result<()> {
        if ip(&["link", "show", &self.bridge]).is_ok() {
            return Ok(());
        }
        tracing::info!(
            "creating bridge {} ({}/{})",
            self.bridge,
            self.host_ip(),
            self.prefix
        );
        ip(&["link", "add", &self.bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/{}", self.host_ip(), self.prefix),
            "dev",
            &self.bridge,
        ])?;
        ip(&["link", "set", &self.bridge, "up"])
    }

    fn records_dir(&self) -> PathBuf {
        self.state_dir.join("netns")
    }

    fn allocate(&self, preferred: Option<Ipv4Addr>) -> Result<Ipv4Addr> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let size = 1u32 << (32 - self.prefix);
        if let Some(a) = preferred.map(u32::from) {
            let in_range = a > self.network + 1 && a < self.network + size - 1;
            if in_range && used.insert(a) {
                return Ok(Ipv4Addr::from(a));
            }
        }
        for offset in 2..size - 1 {
            let a = self.network + offset;
            if used.insert(a) {
                return Ok(Ipv4Addr::from(a));
            }
        }
        bail!("pod CIDR exhausted: every address is in use")
    }

    fn release(&self, addr: Ipv4Addr) {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&u32::from(addr));
    }

    /// A new network namespace with an address, wired into the bridge. The
    /// `preferred` address (the pod's IP from a previous run of the stand-in)
    /// is kept when free, so a pod keeps its IP across a restart of the stand-in.
    pub fn create_sandbox(&self, preferred: Option<Ipv4Addr>) -> Result<Sandbox> {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let addr = self.allocate(preferred)?;
        // Names carry this process's id: deleting a namespace frees its veth
        // asynchronously, so a restarted stand-in must not reuse the names.
        let run = std::process::id() & 0xffff;
        let sandbox = Sandbox {
            netns: format!("rkpod{run:x}x{n:x}"),
            ip: addr,
        };
        let host_end = format!("rkv{run:x}x{n:x}");
        // Recorded before creating, so a crash leaves a record to clean up.
        std::fs::create_dir_all(self.records_dir())?;
        std::fs::write(self.records_dir().join(&sandbox.netns), "")?;
        let made = (|| {
            ip(&["netns", "add", &sandbox.netns])?;
            let ns = sandbox.netns.as_str();
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ])?;
            ip(&["link", "set", &host_end, "master", &self.bridge])?;
            ip(&["link", "set", &host_end, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/{}", self.prefix),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                ns,
                "route",
                "add",
                "default",
                "via",
                &self.host_ip().to_string(),
            ])
        })();
        if let Err(err) = made {
            self.remove_sandbox(&sandbox);
            return Err(err);
        }
        Ok(sandbox)
    }

    /// Kill whatever still runs in the sandbox and delete its namespace (and with
    /// it the veth pair). Idempotent.
    pub fn remove_sandbox(&self, sandbox: &Sandbox) {
        remove_netns(&sandbox.netns);
        let _ = std::fs::remove_file(self.records_dir().join(&sandbox.netns));
        self.release(sandbox.ip);
    }

    /// Remove the namespaces a previous run recorded in this state directory.
    pub fn clean_leftovers(&self) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(self.records_dir()) else {
            return Ok(());
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            tracing::info!("removing network namespace {name} left by a previous run");
            remove_netns(&name);
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(())
    }
}

fn remove_netns(name: &str) {
    if let Ok(out) = StdCommand::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    if Path::new("/run/netns").join(name).exists() {
        if let Err(err) = ip(&["netns", "del", name]) {
            tracing::warn!("{err:#}");
        }
    }
}

/// Run `ip ARGS...`; an error carries its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = StdCommand::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running `ip {}`", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// One bind mount inside a container's mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// Everything needed to start one process in a pod.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub netns: PathBuf,
    pub mounts: Vec<BindMount>,
    pub hostname: String,
    pub working_dir: Option<PathBuf>,
}

/// Host paths created as mount points (removed at shutdown when still empty).
static CREATED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn ensure_mount_point(source: &Path, target: &Path) -> Result<()> {
    if target.exists() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut p = target.parent();
    while let Some(dir) = p {
        if dir.exists() {
            break;
        }
        missing.push(dir.to_path_buf());
        p = dir.parent();
    }
    if source.is_dir() {
        std::fs::create_dir_all(target)
    } else {
        std::fs::create_dir_all(target.parent().unwrap_or(Path::new("/")))
            .and_then(|_| std::fs::write(target, b""))
    }
    .with_context(|| format!("creating mount point {}", target.display()))?;
    let mut created = CREATED.lock().unwrap_or_else(|p| p.into_inner());
    created.push(target.to_path_buf());
    created.extend(missing);
    Ok(())
}

/// Remove the mount points this process created on the host, where still empty.
pub fn remove_created_mount_points() {
    let created = std::mem::take(&mut *CREATED.lock().unwrap_or_else(|p| p.into_inner()));
    for path in created {
        if path.is_dir() {
            let _ = std::fs::remove_dir(&path);
        } else if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).with_context(|| format!("NUL in path {}", p.display()))
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Start `spec` in its pod's namespaces, output to `output` (or nowhere).
pub fn spawn(spec: &ProcessSpec, output: Option<std::fs::File>) -> Result<tokio::process::Child> {
    for m in &spec.mounts {
        ensure_mount_point(&m.source, &m.target)?;
    }
    if let Some(wd) = &spec.working_dir {
        if !wd.exists() && !spec.mounts.iter().any(|m| wd.starts_with(&m.target)) {
            std::fs::create_dir_all(wd)
                .with_context(|| format!("creating workingDir {}", wd.display()))?;
            CREATED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(wd.clone());
        }
    }
    let netns = std::fs::File::open(&spec.netns)
        .with_context(|| format!("opening network namespace {}", spec.netns.display()))?;
    let mounts: Vec<(CString, CString, bool)> = spec
        .mounts
        .iter()
        .map(|m| Ok((cstring(&m.source)?, cstring(&m.target)?, m.read_only)))
        .collect::<Result<_>>()?;
    let root = CString::new("/").expect("no NUL");
    let hostname = spec.hostname.clone().into_bytes();
    let working_dir = spec.working_dir.as_deref().map(cstring).transpose()?;

    let mut cmd = tokio::process::Command::new(&spec.program);
    if let Some(arg0) = spec.argv.first() {
        cmd.arg0(arg0);
    }
    cmd.args(spec.argv.iter().skip(1))
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(false);
    match output {
        Some(file) => {
            cmd.stdout(Stdio::from(file.try_clone()?))
                .stderr(Stdio::from(file));
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    // SAFETY: the closure only makes system calls on data prepared before the
    // fork (no allocation, no locks), as required between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
            check(libc::setsid())?;
            check(libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET))?;
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (source, target, read_only) in &mounts {
                check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                if *read_only {
                    check(libc::mount(
                        std::ptr::null(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
            }
            check(libc::sethostname(hostname.as_ptr().cast(), hostname.len()))?;
            if let Some(wd) = &working_dir {
                check(libc::chdir(wd.as_ptr()))?;
            }
            Ok(())
        });
    }
    cmd.spawn().with_context(|| {
        format!(
            "starting {} in {}",
            spec.program.display(),
            spec.netns.display()
        )
    })
}

/// Send `signal` to the process group of `pid` (the container's session).
pub fn signal_group(pid: u32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(-(pid as i32), signal);
        libc::kill(pid as i32, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_and_address_pool() {
        assert_eq!(
            parse_cidr("10.213.0.0/24").unwrap(),
            (u32::from(Ipv4Addr::new(10, 213, 0, 0)), 24)
        );
        assert_eq!(
            parse_cidr("10.213.0.7/24").unwrap().0,
            u32::from(Ipv4Addr::new(10, 213, 0, 0))
        );
        assert!(parse_cidr("10.213.0.0").is_err());
        assert!(parse_cidr("10.213.0.0/8").is_err());
        let net = Network::new("br", "10.9.9.0/29", Path::new("/nonexistent")).unwrap();
        assert_eq!(net.host_ip(), Ipv4Addr::new(10, 9, 9, 1));
        assert_eq!(
            net.allocate(Some(Ipv4Addr::new(10, 9, 9, 5))).unwrap(),
            Ipv4Addr::new(10, 9, 9, 5)
        );
        net.release(Ipv4Addr::new(10, 9, 9, 5));
        let outside = Some(Ipv4Addr::new(10, 9, 9, 1)); // the host's own address
        let got: Vec<_> = (0..5)
            .map(|i| net.allocate(if i == 0 { outside } else { None }).unwrap())
            .collect();
        assert_eq!(got.first(), Some(&Ipv4Addr::new(10, 9, 9, 2)));
        assert_eq!(got.last(), Some(&Ipv4Addr::new(10, 9, 9, 6)));
        assert!(net.allocate(None).is_err(), "/29 has 5 pod addresses");
        net.release(Ipv4Addr::new(10, 9, 9, 4));
        assert_eq!(
            net.allocate(Some(Ipv4Addr::new(10, 9, 9, 3))).unwrap(),
            Ipv4Addr::new(10, 9, 9, 4),
            "a taken preferred address falls back to a free one"
        );
    }
}
