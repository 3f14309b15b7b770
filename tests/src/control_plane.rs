//! A real Kubernetes control plane for end-to-end tests.
//!
//! [`ControlPlane::up`] runs `tests/k8s/cluster up` (real kube-apiserver,
//! kube-controller-manager and kube-scheduler built from Kubernetes' Go modules,
//! storing on raftkv or etcd) and [`Drop`] runs `tests/k8s/cluster down`, so
//! nothing is left running when a test fails or panics. Tests talk to it the way
//! a user does: the real `kubectl` (of the same version) and, for the store
//! underneath, the real `etcdctl`.
//!
//! There is one control plane per machine at a time (it owns port 6443 and the
//! pods' bridge), so every test that starts one holds [`ControlPlane::lock`]'s
//! guard: keep those tests in one test binary.

use crate::command::{run, CmdOutput};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Where the API server stores its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Raftkv,
    Etcd,
}

impl Store {
    fn flag(self) -> &'static str {
        match self {
            Store::Raftkv => "raftkv",
            Store::Etcd => "etcd",
        }
    }

    /// `RAFTKV_K8S_STORE=etcd` runs the whole suite on etcd, to compare.
    pub fn from_env() -> Result<Store> {
        match std::env::var("RAFTKV_K8S_STORE").as_deref() {
            Err(_) | Ok("") | Ok("raftkv") => Ok(Store::Raftkv),
            Ok("etcd") => Ok(Store::Etcd),
            Ok(other) => bail!("RAFTKV_K8S_STORE must be raftkv or etcd, not {other:?}"),
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    pub store: Store,
    pub store_members: u32,
    /// Start the node stand-in (pods run as processes); off for tests of the
    /// API server and its store alone.
    pub node: bool,
    /// kube-apiserver's `--etcd-compaction-interval` (e.g. "20s").
    pub compaction_interval: Option<String>,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        ControlPlaneOptions {
            store: Store::Raftkv,
            store_members: 3,
            node: true,
            compaction_interval: None,
        }
    }
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A running control plane; brought down on drop.
pub struct ControlPlane {
    state: PathBuf,
    bin: PathBuf,
    store_endpoints: Vec<String>,
    _guard: MutexGuard<'static, ()>,
}

impl ControlPlane {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/cluster")
    }

    /// Starts a control plane; returns once the API server is ready (and the
    /// node, if asked for, is Ready).
    pub fn up(options: ControlPlaneOptions) -> Result<ControlPlane> {
        let guard = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let state = std::env::temp_dir().join(format!("raftkv-k8s-test-{}", std::process::id()));
        let mut args = vec![
            "up".to_string(),
            "--store".to_string(),
            options.store.flag().to_string(),
            "--members".to_string(),
            options.store_members.to_string(),
        ];
        if !options.node {
            args.push("--no-node".to_string());
        }
        let mut cmd = std::process::Command::new(Self::script());
        cmd.args(&args).env("RAFTKV_K8S_DIR", &state);
        if let Some(interval) = &options.compaction_interval {
            cmd.env("RAFTKV_K8S_COMPACTION", interval);
        }
        // From here on, Drop brings down whatever `up` got to start.
        let mut plane = ControlPlane {
            state,
            bin: PathBuf::new(),
            store_endpoints: Vec::new(),
            _guard: guard,
        };
        let output = cmd.output().context("running tests/k8s/cluster up")?;
        if !output.status.success() {
            bail!(
                "tests/k8s/cluster up failed ({}):\n{}{}\nlogs: {}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                plane.state.join("logs").display()
            );
        }
        plane.bin = PathBuf::from(plane.read_state("bin-dir")?);
        plane.store_endpoints = plane
            .read_state("store-endpoints")?
            .split(',')
            .map(|url| url.trim_start_matches("http://").to_string())
            .collect();
        Ok(plane)
    }

    fn read_state(&self, name: &str) -> Result<String> {
        let path = self.state.join(name);
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_string())
    }

    /// The `kubectl` of the control plane's version.
    pub fn kubectl_path(&self) -> PathBuf {
        self.bin.join("kubectl")
    }

    /// The cluster-admin kubeconfig.
    /// The kubelet stand-in's cluster DNS for the host: pod and Service names
    /// under `.svc` to their addresses (see `k8s/hosts.rs`).
    pub fn hosts_file(&self) -> PathBuf {
        self.state.join("node").join("hosts")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.state.join("admin.kubeconfig")
    }

    /// The store's client endpoints (`127.0.0.1:PORT`), for etcdctl and
    /// etcd-client; kube-apiserver is given them as `http://` URLs.
    pub fn store_endpoints(&self) -> &[String] {
        &self.store_endpoints
    }

    /// A component's log file (`kube-apiserver`, `raftkv-1`, ...).
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.state.join("logs").join(format!("{component}.log"))
    }

    /// `kubectl ARGS` as cluster-admin within a minute; its stdout, or an
    /// error with its stderr.
    pub async fn kubectl_stdout(&self, args: &[&str]) -> Result<String> {
        Ok(self
            .kubectl(args, Duration::from_secs(60))
            .await?
            .ok()?
            .stdout)
    }

    /// Waits until the CustomResourceDefinition `name` is Established (its
    /// resources can be created). Polled with `kubectl get`, not `kubectl
    /// wait`: kubectl 1.34's wait fails at once ("`.status.conditions`
    /// accessor error: <nil>") when it reads a CRD the API server has not
    /// yet given any condition, which a just-applied CRD sometimes is.
    pub async fn wait_established(&self, name: &str) -> Result<()> {
        let crd = format!("crd/{name}");
        let established = r#"{.status.conditions[?(@.type=="Established")].status}"#;
        crate::wait::until(
            Duration::from_secs(60),
            format!("{crd} to be Established"),
            || async {
                let status = self
                    .kubectl_stdout(&["get", &crd, "-o", &format!("jsonpath={established}")])
                    .await?;
                Ok((status.trim() == "True").then_some(()))
            },
        )
        .await
    }

    /// `kubectl ARGS` as cluster-admin, with a deadline; the output whatever
    /// the exit code (call `.ok()` to require success).
    pub async fn kubectl(&self, args: &[&str], timeout: Duration) -> Result<CmdOutput> {
        self.kubectl_with_stdin(args, None, timeout).await
    }

    /// `kubectl ARGS` with `stdin` fed to it (e.g. `apply -f -`).
    pub async fn kubectl_with_stdin(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        timeout: Duration,
    ) -> Result<CmdOutput> {
        let kubeconfig = self.kubeconfig();
        let mut full = vec!["--kubeconfig".to_string(), kubeconfig.display().to_string()];
        full.extend(args.iter().map(|a| a.to_string()));
        run(
            &self.kubectl_path(),
            &full,
            &[],
            &["KUBECONFIG"],
            stdin,
            timeout,
        )
        .await
    }

    /// The pid of a component `up` started (`raftkv-1`, `kube-apiserver`, ...).
    pub fn pid(&self, component: &str) -> Result<i32> {
        let pid = self.read_state(&format!("pids/{component}"))?;
        pid.parse()
            .with_context(|| format!("pid file of {component} holds {pid:?}"))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // A failing test returns an error rather than panicking, so Drop cannot
        // tell failure from success: the logs are always kept (everything else
        // goes), and .ci/run removes a previous run's before it starts.
        let status = std::process::Command::new(Self::script())
            .arg("down")
            .env("RAFTKV_K8S_DIR", &self.state)
            .env("RAFTKV_K8S_KEEP", "1")
            .status();
        match status {
            Ok(s) if s.success() => eprintln!(
                "control plane down; its logs are in {}",
                self.state.join("logs").display()
            ),
            Ok(s) => eprintln!("tests/k8s/cluster down exited with {s}"),
            Err(e) => eprintln!("running tests/k8s/cluster down: {e}"),
        }
    }
}
