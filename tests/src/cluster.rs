//! A raftkv cluster of real processes on 127.0.0.1 for one test.
//!
//! Members get ids 1..=n and names m1..mn, fresh ports, and their own dir inside
//! one temporary directory (data dir and log file). [`Cluster::start`] returns once
//! every member answers `/readyz` with 200 and has published its name and client
//! URL, so a test starts from a working cluster (the waits are in
//! [`crate::cluster_waits`]).
//!
//! When the cluster is dropped every process is SIGKILLed, so nothing outlives a
//! test, and the tail of each member's log is printed with `eprintln!`. libtest
//! captures that output and shows it only for a failing test, so CI shows why a
//! test failed without flooding passing runs. Set `RAFTKV_TEST_KEEP_DIRS=1` to keep
//! the data dirs and full logs after the test.
//!
//! With [`ClusterOptions::in_netns`] every member runs in its own network
//! namespace on its own address (see [`crate::fault::netns`]), so tests can cut
//! links between members; otherwise everything is on 127.0.0.1.
//!
//! With [`ClusterOptions::tls`] the client and peer ports speak only TLS and
//! want a client certificate from a CA the cluster makes for itself (see
//! [`crate::tls`]); the harness's clients ([`Cluster::client`],
//! [`Member::client`], [`Cluster::etcdctl`]) present one for `root`.
//!
//! With [`ClusterOptions::power_cuts`] every member's fsyncs are recorded, so
//! [`Cluster::power_cut`] can take from a killed member whatever it had not
//! synced (see [`crate::fault::power_cut`]).
//!
//! Only one cluster runs at a time in a test binary (override with
//! `RAFTKV_TEST_CLUSTERS=N`): several 3-member clusters at once on a loaded 2-core
//! CI machine miss election timeouts and turn timing into flaky failures.

use crate::binaries::raftkv_bin;
use crate::fault::netns::NetnsNetwork;
use crate::fault::power_cut::PowerCut;
use crate::grpc;
use crate::member::{Launch, Member};
use crate::ports::Ports;
use crate::tls::{ClientTls, ClusterTls, MemberCerts};
use crate::Etcdctl;
use anyhow::{bail, Context, Result};
use etcd_client::Client;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use tempfile::TempDir;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Lines of each member's log printed when a cluster is dropped.
const LOG_TAIL_LINES: usize = 60;

/// How to start a cluster: extra `raftkv serve` flags, whether the members get
/// `--initial-cluster`, where they run, whether they speak TLS, and whether
/// their power can be cut.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    extra_args: Vec<String>,
    initial_cluster: bool,
    netns: bool,
    tls: bool,
    power_cuts: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            extra_args: Vec::new(),
            initial_cluster: true,
            netns: false,
            tls: false,
            power_cuts: false,
        }
    }
}

impl ClusterOptions {
    pub fn new() -> ClusterOptions {
        ClusterOptions::default()
    }

    /// An extra flag with a value for every member, e.g. `.arg("--snapshot-count", 50)`.
    pub fn arg(mut self, flag: &str, value: impl ToString) -> ClusterOptions {
        self.extra_args.push(flag.to_string());
        self.extra_args.push(value.to_string());
        self
    }

    /// Start a lone member with no `--initial-cluster` (and no `--join`), which the
    /// interface defines as a single-member cluster. Only for `start(1)`.
    pub fn without_initial_cluster(mut self) -> ClusterOptions {
        self.initial_cluster = false;
        self
    }

    /// Run every member in its own network namespace (needs root and `ip`; see
    /// [`crate::fault::netns::unavailable_reason`]).
    pub fn in_netns(mut self) -> ClusterOptions {
        self.netns = true;
        self
    }

    /// Serve the client and peer ports over TLS only, each requiring a client
    /// certificate: the cluster makes a CA in `<root>/tls/`, gives every member
    /// a client-port and a peer-port certificate from it, and starts it with
    /// `--cert-file --key-file --trusted-ca-file --client-cert-auth`, their
    /// `--peer-` forms, and `https://` client and peer URLs (see [`crate::tls`]).
    pub fn tls(mut self) -> ClusterOptions {
        self.tls = true;
        self
    }

    /// Record every member's fsyncs, so [`Cluster::power_cut`] works.
    pub fn power_cuts(mut self) -> ClusterOptions {
        self.power_cuts = true;
        self
    }

    /// Start `n` members and wait until each is ready.
    pub async fn start(self, n: usize) -> Result<Cluster> {
        if n == 0 {
            bail!("a cluster needs at least one member");
        }
        if !self.initial_cluster && n != 1 {
            bail!("without --initial-cluster only a single member can be started");
        }
        let slot = cluster_slots()
            .acquire_owned()
            .await
            .context("cluster slot semaphore closed")?;
        let bin = raftkv_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("raftkv-test-")
            .tempdir()
            .context("creating the cluster's temporary dir")?;
        let network = match self.netns {
            true => Some(NetnsNetwork::create()?),
            false => None,
        };
        let tls = match self.tls {
            true => Some(ClusterTls::create(dir.path().join("tls"))?),
            false => None,
        };
        let power_cut = match self.power_cuts {
            true => Some(PowerCut::new(dir.path())?),
            false => None,
        };
        let mut cluster = Cluster {
            members: Vec::new(),
            options: self,
            bin,
            dir: Some(dir),
            network,
            tls,
            power_cut,
            slots_used: 0,
            _slot: slot,
        };
        let ports = (0..n)
            .map(|_| cluster.allocate_ports())
            .collect::<Result<Vec<_>>>()?;
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}={}", i + 1, p.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for (i, ports) in ports.into_iter().enumerate() {
            let id = i as u64 + 1;
            let name = format!("m{id}");
            let member_dir = cluster.root().join(&name);
            let mut args = serve_args(id, &name, &member_dir, &ports);
            args.extend(cluster.tls_args(&name, &ports)?);
            if cluster.options.initial_cluster {
                args.extend([
                    "--initial-cluster".to_string(),
                    initial_cluster.clone(),
                    "--initial-cluster-token".to_string(),
                    "raftkv-tests".to_string(),
                ]);
            }
            args.extend(cluster.options.extra_args.iter().cloned());
            cluster.spawn(id, &name, member_dir, ports, args)?;
        }
        cluster.wait_ready_all().await?;
        cluster.wait_published().await?;
        Ok(cluster)
    }
}

/// The `raftkv serve` flags every member gets: identity, data dir, listeners and
/// advertised URLs.
fn serve_args(id: u64, name: &str, member_dir: &Path, ports: &Ports) -> Vec<String> {
    let data_dir = Member::data_dir_of(member_dir);
    [
        "serve",
        "--name",
        name,
        "--id",
        &id.to_string(),
        "--data-dir",
        &data_dir.to_string_lossy(),
        "--listen-client-urls",
        &ports.client_url(),
        "--listen-peer-urls",
        &ports.peer_url(),
        "--listen-metrics-urls",
        &ports.metrics_url(),
        "--advertise-client-urls",
        &ports.client_url(),
        "--initial-advertise-peer-urls",
        &ports.peer_url(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn cluster_slots() -> Arc<Semaphore> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SLOTS
        .get_or_init(|| {
            let n = std::env::var("RAFTKV_TEST_CLUSTERS")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|&n| n > 0)
                .unwrap_or(1);
            Arc::new(Semaphore::new(n))
        })
        .clone()
}

/// Real raftkv processes; see the module docs.
pub struct Cluster {
    members: Vec<Member>,
    options: ClusterOptions,
    bin: PathBuf,
    /// `None` only while being dropped with `RAFTKV_TEST_KEEP_DIRS` set.
    dir: Option<TempDir>,
    /// Dropped after the members are killed (fields drop after `Drop::drop`).
    network: Option<NetnsNetwork>,
    /// The CA and certificates, if started [`ClusterOptions::tls`].
    tls: Option<ClusterTls>,
    /// The members' sync record, if started [`ClusterOptions::power_cuts`].
    power_cut: Option<PowerCut>,
    /// Network namespace slots handed out so far.
    slots_used: u8,
    _slot: OwnedSemaphorePermit,
}

impl Cluster {
    /// `n` members from `--initial-cluster`, default flags; ready when this returns.
    pub async fn start(n: usize) -> Result<Cluster> {
        ClusterOptions::new().start(n).await
    }

    /// Ports for a new member: fresh ports on 127.0.0.1, or in netns mode a new
    /// namespace with its own address and etcd's fixed ports.
    /// In a TLS cluster their client and peer URLs are `https://`.
    pub fn allocate_ports(&mut self) -> Result<Ports> {
        let ports = match &self.network {
            None => Ports::allocate()?,
            Some(network) => {
                self.slots_used += 1;
                Ports::fixed_on(network.add_slot(self.slots_used)?)
            }
        };
        Ok(ports.with_https(self.options.tls))
    }

    /// The network of namespaces the members run in, if started [`ClusterOptions::in_netns`].
    pub fn network(&self) -> Option<&NetnsNetwork> {
        self.network.as_ref()
    }

    fn namespace_of(&self, ports: &Ports) -> Option<String> {
        self.network.as_ref()?.namespace_of(ports.host)
    }

    /// The temporary dir holding every member's dir.
    pub fn root(&self) -> &Path {
        self.dir.as_ref().expect("cluster dir is present").path()
    }

    /// Every member ever started, including stopped and removed ones.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn members_mut(&mut self) -> &mut [Member] {
        &mut self.members
    }

    /// The member with `id`; panics if there is none (a bug in the test).
    pub fn member(&self, id: u64) -> &Member {
        self.members
            .iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no member with id {id} in this cluster"))
    }

    /// The member with `id`; panics if there is none (a bug in the test).
    pub fn member_mut(&mut self, id: u64) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no member with id {id} in this cluster"))
    }

    /// Ids of the members that should be running (started, not killed or stopped).
    pub fn live_ids(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|m| m.expected_running())
            .map(|m| m.id)
            .collect()
    }

    /// SIGSTOP every running member but `leader`: from then on nothing the
    /// leader sends is acknowledged. Returns the paused members, for
    /// [`Cluster::resume_each`].
    pub fn cut_off(&mut self, leader: u64) -> Result<Vec<u64>> {
        let others: Vec<u64> = self
            .live_ids()
            .into_iter()
            .filter(|id| *id != leader)
            .collect();
        for id in &others {
            self.member_mut(*id).pause()?;
        }
        Ok(others)
    }

    /// SIGCONT each of `ids`.
    pub fn resume_each(&mut self, ids: &[u64]) -> Result<()> {
        for id in ids {
            self.member_mut(*id).resume()?;
        }
        Ok(())
    }

    /// Client endpoints of the members that should be running.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.expected_running())
            .map(Member::client_endpoint)
            .collect()
    }

    /// An etcd-client balanced over every member that should be running (over
    /// TLS, as `root`'s certificate, in a TLS cluster).
    pub async fn client(&self) -> Result<Client> {
        grpc::connect_with(&self.endpoints(), self.client_tls(), grpc::REQUEST_TIMEOUT).await
    }

    /// etcdctl pointed at every member that should be running (with `https://`
    /// endpoints and `root`'s `--cacert --cert --key` in a TLS cluster).
    pub fn etcdctl(&self) -> Result<Etcdctl> {
        let ctl = Etcdctl::new(&self.endpoints())?;
        Ok(match self.client_tls() {
            Some(tls) => ctl.with_tls(tls),
            None => ctl,
        })
    }

    /// The CA and certificates, if started [`ClusterOptions::tls`].
    pub fn tls(&self) -> Option<&ClusterTls> {
        self.tls.as_ref()
    }

    /// The client files (`root`'s) the harness's clients use, in a TLS cluster.
    pub fn client_tls(&self) -> Option<&ClientTls> {
        self.tls.as_ref().map(ClusterTls::root_client)
    }

    /// Issue member `id` new client-port and peer-port certificates from the
    /// cluster's CA and replace its files with them while it runs (each file
    /// by rename). Returns what its files now hold. Only in a TLS cluster.
    pub fn rotate_member_certs(&mut self, id: u64) -> Result<&MemberCerts> {
        let (name, host) = {
            let member = self.member(id);
            (member.name.clone(), member.ports.host)
        };
        let tls = self
            .tls
            .as_mut()
            .context("rotating certificates needs a cluster started with ClusterOptions::tls")?;
        tls.issue_member(&name, IpAddr::V4(host))
    }

    /// The TLS flags of a new member `name` on `ports`, its certificates issued
    /// now; none unless this is a TLS cluster.
    fn tls_args(&mut self, name: &str, ports: &Ports) -> Result<Vec<String>> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(Vec::new());
        };
        tls.issue_member(name, IpAddr::V4(ports.host))?;
        Ok(tls.serve_args(name))
    }

    /// Start a member that joins an existing cluster: `--join --id ID`, on `ports`
    /// (use [`Cluster::allocate_ports`], and the same ports' peer URL in MemberAdd), named
    /// `m<k>` where k counts every member this cluster has started. Does not wait
    /// for it: a joiner is ready only once the leader has added it.
    pub fn add_joiner(&mut self, id: u64, ports: Ports) -> Result<&mut Member> {
        if self.members.iter().any(|m| m.id == id) {
            bail!("this cluster already started a member with id {id}");
        }
        let name = format!("m{}", self.members.len() + 1);
        let member_dir = self.root().join(&name);
        let mut args = serve_args(id, &name, &member_dir, &ports);
        args.extend(self.tls_args(&name, &ports)?);
        args.push("--join".to_string());
        args.extend(self.options.extra_args.iter().cloned());
        self.spawn(id, &name, member_dir, ports, args)
    }

    /// The data dir the next member started by this cluster will use (e.g. to
    /// restore a backup into before [`Cluster::add_member`]).
    pub fn next_member_data_dir(&self) -> PathBuf {
        Member::data_dir_of(&self.root().join(format!("m{}", self.members.len() + 1)))
    }

    /// Start a member with the usual identity, data dir and listener flags plus
    /// `extra` (no `--join`, no `--initial-cluster`): for a member whose data dir
    /// was prepared beforehand, e.g. by `raftkv snapshot restore`. Does not wait.
    pub fn add_member(&mut self, id: u64, ports: Ports, extra: &[&str]) -> Result<&mut Member> {
        if self.members.iter().any(|m| m.id == id) {
            bail!("this cluster already started a member with id {id}");
        }
        let name = format!("m{}", self.members.len() + 1);
        let member_dir = self.root().join(&name);
        let mut args = serve_args(id, &name, &member_dir, &ports);
        args.extend(self.tls_args(&name, &ports)?);
        args.extend(extra.iter().map(|s| s.to_string()));
        self.spawn(id, &name, member_dir, ports, args)
    }

    /// Cut member `id`'s power: SIGKILL it and drop from its write-ahead log
    /// everything it had not fsynced; the bytes that lost. Needs
    /// [`ClusterOptions::power_cuts`]. Restart it with [`Member::restart`].
    pub fn power_cut(&mut self, id: u64) -> Result<u64> {
        let power_cut = self
            .power_cut
            .clone()
            .context("this cluster was not started with ClusterOptions::power_cuts")?;
        let member = self.member_mut(id);
        member.kill9()?;
        power_cut.drop_unsynced(&member.data_dir())
    }

    /// Syncs the members have made so far, as the power-cut shim recorded them
    /// (`None` without [`ClusterOptions::power_cuts`]).
    pub fn syncs_recorded(&self) -> Result<Option<usize>> {
        self.power_cut
            .as_ref()
            .map(PowerCut::syncs_recorded)
            .transpose()
    }

    /// Start member `id` with the full command line `args`, in its namespace,
    /// with the cluster's environment and client TLS.
    fn spawn(
        &mut self,
        id: u64,
        name: &str,
        member_dir: PathBuf,
        ports: Ports,
        args: Vec<String>,
    ) -> Result<&mut Member> {
        let launch = Launch {
            args,
            netns: self.namespace_of(&ports),
            env: self.member_env(),
        };
        let member = Member::start(&self.bin, id, name, member_dir, ports, launch)?
            .with_client_tls(self.client_tls().cloned());
        self.members.push(member);
        Ok(self.members.last_mut().expect("just pushed"))
    }

    /// What every member's process gets in its environment.
    fn member_env(&self) -> Vec<(String, String)> {
        self.power_cut
            .as_ref()
            .map(PowerCut::env)
            .unwrap_or_default()
    }

    /// SIGKILL every running member.
    pub fn kill9_all(&mut self) -> Result<()> {
        for m in self.members.iter_mut() {
            m.kill9()?;
        }
        Ok(())
    }

    /// SIGTERM every running member at once, then wait for each to exit (SIGKILL
    /// after the stop timeout). Stopping them one by one would leave the last ones
    /// without a quorum while they shut down.
    pub async fn stop_all(&mut self) -> Result<()> {
        let running: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].is_running())
            .collect();
        for &i in &running {
            self.members[i].signal_term()?;
        }
        for &i in &running {
            self.members[i].wait_exit(crate::wait::STOP_TIMEOUT).await?;
        }
        Ok(())
    }

    /// Restart every member in `ids` (same flags, same data dirs), then wait until
    /// all live members are ready.
    pub async fn restart(&mut self, ids: &[u64]) -> Result<()> {
        for &id in ids {
            self.member_mut(id).restart()?;
        }
        self.wait_ready_all().await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in self.members.iter_mut() {
            let _ = m.kill9();
        }
        for m in &self.members {
            eprintln!(
                "==== {} (id {}) log tail, last {LOG_TAIL_LINES} lines of {} ====\n{}",
                m.name,
                m.id,
                m.log_path().display(),
                m.log_tail(LOG_TAIL_LINES)
            );
        }
        if std::env::var_os("RAFTKV_TEST_KEEP_DIRS").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("==== kept cluster dir {}", dir.keep().display());
            }
        }
    }
}
