//! Real network partitions: each member in its own Linux network namespace.
//!
//! Why namespaces and not a fault-injecting proxy: a proxy in front of a member's
//! peer port sees connections from every other member on one address, so it can
//! cut "everything into m2" but not "m1 to m2 only" (a bridge), and it leaves the
//! node's own listeners, DNS-free URLs and connection handling untested. With a
//! namespace per member, raftkv binds its real sockets on its own address and a
//! cut is a kernel route: packets are dropped exactly as a broken switch would.
//!
//! Layout of one [`NetnsNetwork`] (names carry the test process id and a counter,
//! so concurrent runs never collide):
//!
//! ```text
//!  test process (host namespace) 10.X.Y.254 on bridge rkbPPPPPPNN
//!     | veth          | veth          | veth
//!  ns slot 1        ns slot 2       ns slot 3 ...
//!  10.X.Y.1:2379    10.X.Y.2:2379   10.X.Y.3:2379
//! ```
//!
//! A cut between members a and b is a `blackhole` route to b's /32 inside a's
//! namespace and to a's /32 inside b's: packets vanish silently (a timeout for
//! the sender, not a quick "connection refused"), in both directions. Clients in
//! the test process reach every member through the bridge whatever the cuts, as
//! Jepsen's clients do: an isolated member keeps answering, and must not answer
//! wrongly. Everything is removed on drop (also when a test panics); deleting a
//! namespace removes its end of the veth pair and with it the host end.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Why partitions cannot run here, or `None` if they can (root and `ip`).
pub fn unavailable_reason() -> Option<String> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return Some("network namespaces need root; not running as root".to_string());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("`ip -V` failed: {}", out.status)),
        Err(err) => Some(format!("no `ip` command (install iproute2): {err}")),
    }
}

/// A bridge with one namespace per member slot; see the module docs.
pub struct NetnsNetwork {
    /// Unique per network: `PPPPPP` (pid, hex) + `NN` (counter, hex).
    tag: String,
    bridge: String,
    subnet: [u8; 3],
    /// Namespace name per member address.
    namespaces: Mutex<BTreeMap<Ipv4Addr, String>>,
    /// Directed pairs (from, to) whose packets are blackholed.
    cuts: Mutex<BTreeSet<(Ipv4Addr, Ipv4Addr)>>,
}

impl NetnsNetwork {
    /// A bridge on a free 10.X.Y.0/24 with the host at .254; no namespaces yet.
    pub fn create() -> Result<NetnsNetwork> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        static CREATE: Mutex<()> = Mutex::new(());
        let _one_at_a_time = CREATE.lock().unwrap_or_else(|p| p.into_inner());
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{:06x}{:02x}", std::process::id() & 0xff_ffff, n & 0xff);
        let subnet = free_subnet()?;
        let network = NetnsNetwork {
            bridge: format!("rkb{tag}"),
            tag,
            subnet,
            namespaces: Mutex::new(BTreeMap::new()),
            cuts: Mutex::new(BTreeSet::new()),
        };
        ip(&["link", "add", &network.bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", network.host_ip()),
            "dev",
            &network.bridge,
        ])?;
        ip(&["link", "set", &network.bridge, "up"])?;
        Ok(network)
    }

    /// The test process's address on the bridge.
    pub fn host_ip(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 254)
    }

    /// Create the namespace for member slot `slot` (1..=253) and return its address.
    pub fn add_slot(&self, slot: u8) -> Result<Ipv4Addr> {
        if slot == 0 || slot > 253 {
            bail!("netns slot {slot} out of range 1..=253");
        }
        let [a, b, c] = self.subnet;
        let addr = Ipv4Addr::new(a, b, c, slot);
        let ns = format!("rk{}s{slot}", self.tag);
        let host_end = format!("rv{}{slot:02x}", self.tag);
        ip(&["netns", "add", &ns])?;
        // Recorded before configuring, so drop removes a half-configured namespace too.
        self.namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr, ns.clone());
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["link", "set", &host_end, "master", &self.bridge])?;
        ip(&["link", "set", &host_end, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        Ok(addr)
    }

    /// The namespace of the member at `addr`.
    pub fn namespace_of(&self, addr: Ipv4Addr) -> Option<String> {
        self.namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
            .cloned()
    }

    /// Drop every packet between `a` and `b`, both ways. Idempotent.
    pub fn cut(&self, a: Ipv4Addr, b: Ipv4Addr) -> Result<()> {
        self.cut_one_way(a, b)?;
        self.cut_one_way(b, a)
    }

    /// Drop every packet from the member at `member` to the test process:
    /// its clients' connections to it time out, and nothing else changes.
    pub fn cut_from_clients(&self, member: Ipv4Addr) -> Result<()> {
        self.cut_one_way(member, self.host_ip())
    }

    fn cut_one_way(&self, from: Ipv4Addr, to: Ipv4Addr) -> Result<()> {
        let mut cuts = self.cuts.lock().unwrap_or_else(|p| p.into_inner());
        if cuts.contains(&(from, to)) {
            return Ok(());
        }
        let ns = self
            .namespace_of(from)
            .with_context(|| format!("no namespace for {from}"))?;
        ip(&["-n", &ns, "route", "add", "blackhole", &format!("{to}/32")])?;
        cuts.insert((from, to));
        Ok(())
    }

    /// Remove every cut.
    pub fn heal(&self) -> Result<()> {
        let mut cuts = self.cuts.lock().unwrap_or_else(|p| p.into_inner());
        let mut first_error = None;
        for (from, to) in std::mem::take(&mut *cuts) {
            let Some(ns) = self.namespace_of(from) else {
                continue;
            };
            if let Err(err) = ip(&["-n", &ns, "route", "del", "blackhole", &format!("{to}/32")]) {
                first_error.get_or_insert(err);
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// The directed cuts in place now.
    pub fn cuts(&self) -> BTreeSet<(Ipv4Addr, Ipv4Addr)> {
        self.cuts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for NetnsNetwork {
    fn drop(&mut self) {
        let namespaces =
            std::mem::take(&mut *self.namespaces.lock().unwrap_or_else(|p| p.into_inner()));
        for ns in namespaces.values() {
            if let Err(err) = ip(&["netns", "del", ns]) {
                eprintln!("netns cleanup: {err:#}");
            }
        }
        if let Err(err) = ip(&["link", "del", &self.bridge]) {
            eprintln!("netns cleanup: {err:#}");
        }
    }
}

/// A 10.X.Y.0/24 (X in 200..=249) that no route on this machine uses yet.
fn free_subnet() -> Result<[u8; 3]> {
    let routes = Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .context("running `ip -4 route show table all`")?;
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    let start = std::process::id() as usize;
    for i in 0..(50 * 256) {
        let k = (start + i * 7919) % (50 * 256);
        let subnet = [10, 200 + (k / 256) as u8, (k % 256) as u8];
        let prefix = format!("10.{}.{}.", subnet[1], subnet[2]);
        if !routes.contains(&prefix) {
            return Ok(subnet);
        }
    }
    bail!("no free 10.2xx.Y.0/24 subnet for a test network")
}

/// Run `ip ARGS...`; an error carries its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
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
