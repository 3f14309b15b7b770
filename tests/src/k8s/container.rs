//! One container's life: start, probe, restart, stop (stand-in for the
//! kubelet's container manager and the runtime's process supervision).
//!
//! A supervisor task per container builds the process (see `command.rs`,
//! `env.rs`, `sandbox.rs`), starts it with stdout and stderr appended to
//! `STATE/pods/NS_NAME/CONTAINER.log` (the previous run's log is kept as
//! `CONTAINER.log.previous`; `kubectl logs` does not work, as there is no kubelet
//! API server), runs its probes (`probes.rs`), and restarts it by the pod's
//! `restartPolicy` with the kubelet's exponential back-off, capped here at
//! [`BACKOFF_CAP`] (the kubelet's is 5 minutes) so tests that kill a member see
//! it back quickly; the waiting reason meanwhile is CrashLoopBackOff. A failed
//! liveness or startup probe kills the process, which then restarts. Stopping
//! runs the preStop hook (exec or httpGet), sends SIGTERM to the container's
//! process group and SIGKILL after the grace period. Not done: postStart hooks
//! (a clear error), sidecar init containers (`restartPolicy: Always` on an init
//! container is run like any init container), resource limits.

use super::command::{
    container_argv, container_path, expand, is_executable, resolve_program, StartError,
};
use super::env::{referenced_objects, resolve_env, Lookups, PodFacts};
use super::probes::ProbeSpec;
use super::sandbox::{self, BindMount, ProcessSpec};
use super::status::{PodRuntime, ProcState};
use super::Ctx;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};

/// The longest wait between restarts (the kubelet's is 5 minutes).
pub const BACKOFF_CAP: Duration = Duration::from_secs(20);
const BACKOFF_START: Duration = Duration::from_secs(10);

/// Everything a container's supervisor needs.
#[derive(Clone)]
pub struct ContainerCtx {
    pub ctx: Arc<Ctx>,
    pub pod: Arc<Pod>,
    pub container: Container,
    pub is_init: bool,
    pub index: usize,
    pub runtime: Arc<Mutex<PodRuntime>>,
    pub changed: Arc<Notify>,
    pub facts: PodFacts,
    pub netns: PathBuf,
    pub pod_dir: PathBuf,
    /// Volume name -> host path.
    pub volumes: Arc<std::collections::BTreeMap<String, PathBuf>>,
}

/// How a supervisor ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    Stopped,
}

/// Kubelet-like restart delay after `restarts` crashes: 10 s doubling, capped.
pub fn backoff(restarts: u32) -> Duration {
    let factor = 1u32 << restarts.min(16);
    (BACKOFF_START * factor).min(BACKOFF_CAP)
}

/// Whether the policy restarts a container that exited with `code`.
pub fn restarts(policy: &str, code: i32, is_init: bool) -> bool {
    match policy {
        "Never" => false,
        // An init container that succeeded is done, whatever the policy.
        _ if is_init => code != 0,
        "OnFailure" => code != 0,
        _ => true,
    }
}

pub(super) enum ProbeEvent {
    Started,
    Ready(bool),
    Kill(String),
}

impl ContainerCtx {
    fn update(&self, f: impl FnOnce(&mut super::status::ContainerRuntime)) {
        let mut rt = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        let list = if self.is_init {
            &mut rt.init_containers
        } else {
            &mut rt.containers
        };
        if let Some(c) = list.get_mut(self.index) {
            f(c);
        }
        drop(rt);
        self.changed.notify_one();
    }

    fn waiting(&self, e: &StartError) {
        tracing::warn!(
            "pod {}: container {}: {e}",
            self.facts.hostname,
            self.container.name
        );
        let state = ProcState::waiting(&e.reason, Some(e.message.clone()));
        self.update(|c| c.state = state);
    }

    fn mounts(&self) -> Result<Vec<BindMount>, StartError> {
        let mut mounts = vec![BindMount {
            source: self.pod_dir.join("hosts"),
            target: PathBuf::from("/etc/hosts"),
            read_only: false,
        }];
        if let Ok(resolv) = std::fs::canonicalize("/etc/resolv.conf") {
            mounts.push(BindMount {
                source: self.pod_dir.join("resolv.conf"),
                target: resolv,
                read_only: true,
            });
        }
        for vm in self.container.volume_mounts.iter().flatten() {
            let base = self.volumes.get(&vm.name).ok_or_else(|| {
                StartError::new(
                    "CreateContainerConfigError",
                    format!("volumeMount {:?} names no volume of the pod", vm.name),
                )
            })?;
            if vm.sub_path_expr.is_some() {
                return Err(StartError::new(
                    "CreateContainerConfigError",
                    "volumeMount subPathExpr is not supported by the raftkv kubelet stand-in",
                ));
            }
            let source = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) if sub.split('/').any(|c| c == "..") || sub.starts_with('/') => {
                    return Err(StartError::new(
                        "CreateContainerConfigError",
                        format!("subPath {sub:?} escapes the volume"),
                    ))
                }
                Some(sub) => {
                    let p = base.join(sub);
                    if !p.exists() {
                        std::fs::create_dir_all(&p).map_err(|e| {
                            StartError::new("CreateContainerError", format!("{}: {e}", p.display()))
                        })?;
                    }
                    p
                }
                None => base.clone(),
            };
            mounts.push(BindMount {
                source,
                target: PathBuf::from(&vm.mount_path),
                read_only: vm.read_only.unwrap_or(false),
            });
        }
        Ok(mounts)
    }

    async fn lookups(&self) -> Result<Lookups, StartError> {
        let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
        let (cms, secrets) = referenced_objects(&self.container);
        let mut lookups = Lookups::default();
        let err = |e: kube::Error| StartError::new("CreateContainerConfigError", e.to_string());
        let cm_api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &ns);
        for name in cms {
            let data = cm_api
                .get_opt(&name)
                .await
                .map_err(err)?
                .map(|c| c.data.unwrap_or_default());
            lookups.config_maps.insert(name, data);
        }
        let secret_api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
        for name in secrets {
            let data = secret_api.get_opt(&name).await.map_err(err)?.map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect()
            });
            lookups.secrets.insert(name, data);
        }
        Ok(lookups)
    }

    /// The process to start for `argv` (the container's own, or a probe's or hook's).
    async fn process(&self, argv: Option<Vec<String>>) -> Result<ProcessSpec, StartError> {
        if self
            .container
            .lifecycle
            .as_ref()
            .is_some_and(|l| l.post_start.is_some())
        {
            return Err(StartError::new(
                "CreateContainerConfigError",
                "lifecycle.postStart is not supported by the raftkv kubelet stand-in",
            ));
        }
        for probe in [
            &self.container.startup_probe,
            &self.container.readiness_probe,
            &self.container.liveness_probe,
        ]
        .into_iter()
        .flatten()
        {
            ProbeSpec::resolve(probe, &self.container)?;
        }
        let image = self.container.image.clone().unwrap_or_default();
        let mut env = resolve_env(
            &self.pod,
            &self.container,
            &self.facts,
            &self.lookups().await?,
        )?;
        // The image's own directory first (see `command`), unless the pod
        // set PATH itself.
        for (name, value) in env.iter_mut() {
            if name == "PATH" && *value == self.facts.path {
                *value = container_path(value, &self.ctx.bin_dir, &image);
            }
        }
        let argv = match argv {
            Some(a) => a,
            None => container_argv(&self.container)?
                .iter()
                .map(|a| expand(a, &env))
                .collect(),
        };
        let program = argv
            .first()
            .cloned()
            .ok_or_else(|| StartError::new("CreateContainerConfigError", "empty command"))?;
        let program = resolve_program(&program, &self.ctx.bin_dir, &image, is_executable)?;
        Ok(ProcessSpec {
            program,
            argv,
            env,
            netns: self.netns.clone(),
            mounts: self.mounts()?,
            hostname: self.facts.hostname.clone(),
            working_dir: self.container.working_dir.clone().map(PathBuf::from),
        })
    }

    fn log_path(&self) -> PathBuf {
        self.pod_dir.join(format!("{}.log", self.container.name))
    }

    /// Run until the container is done for good or `stop` carries a grace period.
    pub async fn supervise(self, mut stop: watch::Receiver<Option<Duration>>) -> Outcome {
        let policy = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .restart_policy
            .clone();
        let mut crashes = 0u32;
        let mut first = true;
        loop {
            if stop.borrow().is_some() {
                return Outcome::Stopped;
            }
            let spec = match self.process(None).await {
                Ok(spec) => spec,
                Err(e) => {
                    self.waiting(&e);
                    if wait_or_stop(&mut stop, Duration::from_secs(5)).await {
                        return Outcome::Stopped;
                    }
                    continue;
                }
            };
            let log = self.log_path();
            if !first && log.exists() {
                let _ = std::fs::rename(
                    &log,
                    self.pod_dir
                        .join(format!("{}.log.previous", self.container.name)),
                );
            }
            let file = match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
            {
                Ok(f) => f,
                Err(e) => {
                    self.waiting(&StartError::new(
                        "RunContainerError",
                        format!("{}: {e}", log.display()),
                    ));
                    if wait_or_stop(&mut stop, Duration::from_secs(5)).await {
                        return Outcome::Stopped;
                    }
                    continue;
                }
            };
            let mut child = match sandbox::spawn(&spec, Some(file)) {
                Ok(c) => c,
                Err(e) => {
                    self.waiting(&StartError::new("RunContainerError", format!("{e:#}")));
                    if wait_or_stop(&mut stop, backoff(crashes)).await {
                        return Outcome::Stopped;
                    }
                    crashes += 1;
                    continue;
                }
            };
            let pid = child.id().unwrap_or(0);
            let started_at = Timestamp::now();
            let started_instant = Instant::now();
            tracing::info!(
                "pod {}: container {} started, pid {pid}",
                self.facts.hostname,
                self.container.name
            );
            let has_startup = self.container.startup_probe.is_some();
            let has_readiness = self.container.readiness_probe.is_some();
            self.update(|c| {
                if !first {
                    c.restart_count += 1;
                }
                c.state = ProcState::Running { pid, started_at };
                c.started = !has_startup;
                c.ready = !self.is_init && !has_startup && !has_readiness;
            });
            first = false;
            let (events_tx, mut events) = mpsc::channel(8);
            let probes = if self.is_init {
                None
            } else {
                Some(tokio::spawn(
                    self.clone().probe_loop(spec.clone(), events_tx),
                ))
            };
            let mut killed_for: Option<String> = None;
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    Some(event) = events.recv() => match event {
                        ProbeEvent::Started => self.update(|c| {
                            c.started = true;
                            if !has_readiness { c.ready = true; }
                        }),
                        ProbeEvent::Ready(r) => self.update(|c| c.ready = r),
                        ProbeEvent::Kill(why) => {
                            tracing::warn!("pod {}: container {}: {why}; killing it", self.facts.hostname, self.container.name);
                            killed_for = Some(why);
                            self.terminate(pid, &spec, self.grace()).await;
                        }
                    },
                    _ = stop.changed() => {
                        let grace = *stop.borrow();
                        if let Some(grace) = grace {
                            if let Some(p) = &probes { p.abort(); }
                            self.terminate(pid, &spec, grace).await;
                        }
                    }
                }
            };
            if let Some(p) = probes {
                p.abort();
            }
            let (code, signal) = match &status {
                Ok(s) => (
                    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
                    s.signal(),
                ),
                Err(_) => (-1, None),
            };
            let reason = if code == 0 { "Completed" } else { "Error" };
            tracing::info!(
                "pod {}: container {} exited with {code}",
                self.facts.hostname,
                self.container.name
            );
            let terminated = ProcState::Terminated {
                pid: Some(pid),
                exit_code: code,
                signal,
                reason: reason.to_string(),
                message: killed_for,
                started_at: Some(started_at),
                finished_at: Timestamp::now(),
            };
            if stop.borrow().is_some() {
                self.update(|c| {
                    c.state = terminated;
                    c.ready = false;
                });
                return Outcome::Stopped;
            }
            if !restarts(&policy, code, self.is_init) {
                self.update(|c| {
                    c.state = terminated;
                    c.ready = false;
                });
                return if code == 0 {
                    Outcome::Succeeded
                } else {
                    Outcome::Failed
                };
            }
            if started_instant.elapsed() > Duration::from_secs(120) {
                crashes = 0;
            }
            let delay = backoff(crashes);
            crashes += 1;
            let message = format!(
                "back-off {}s restarting failed container={} pod={}",
                delay.as_secs(),
                self.container.name,
                self.facts.hostname
            );
            self.update(|c| {
                c.last_state = Some(terminated);
                c.state = ProcState::waiting("CrashLoopBackOff", Some(message));
                c.ready = false;
            });
            if wait_or_stop(&mut stop, delay).await {
                return Outcome::Stopped;
            }
        }
    }

    fn grace(&self) -> Duration {
        let spec = self.pod.spec.as_ref();
        Duration::from_secs(
            spec.and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .max(0) as u64,
        )
    }

    /// preStop hook, SIGTERM, and SIGKILL after `grace`.
    async fn terminate(&self, pid: u32, spec: &ProcessSpec, grace: Duration) {
        let deadline = Instant::now() + grace;
        if let Some(hook) = self
            .container
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.clone())
        {
            let ran = tokio::time::timeout(grace, self.run_hook(&hook, spec)).await;
            if !matches!(ran, Ok(Ok(()))) {
                tracing::warn!(
                    "pod {}: container {}: preStop hook: {ran:?}",
                    self.facts.hostname,
                    self.container.name
                );
            }
        }
        sandbox::signal_group(pid, libc::SIGTERM);
        // The caller waits for the exit; make sure it comes by the deadline.
        let remaining = deadline.saturating_duration_since(Instant::now());
        tokio::spawn(async move {
            tokio::time::sleep(remaining).await;
            sandbox::signal_group(pid, libc::SIGKILL);
        });
    }
}

/// Sleep for `d`; true if a stop arrived meanwhile.
async fn wait_or_stop(stop: &mut watch::Receiver<Option<Duration>>, d: Duration) -> bool {
    let sleep = tokio::time::sleep(d);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return stop.borrow().is_some(),
            changed = stop.changed() => {
                if changed.is_err() || stop.borrow().is_some() {
                    return true;
                }
            }
        }
    }
}

/// Where a pod's files live: `STATE/pods/NS_NAME`.
pub fn pod_dir(state_dir: &Path, pod: &Pod) -> PathBuf {
    state_dir.join("pods").join(format!(
        "{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("unnamed")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_ten_seconds_to_the_cap() {
        assert_eq!(backoff(0), Duration::from_secs(10));
        assert_eq!(backoff(1), Duration::from_secs(20));
        assert_eq!(backoff(5), BACKOFF_CAP);
        assert_eq!(backoff(100), BACKOFF_CAP);
    }

    #[test]
    fn restart_policy_decisions() {
        assert!(restarts("Always", 0, false));
        assert!(restarts("Always", 1, false));
        assert!(!restarts("OnFailure", 0, false));
        assert!(restarts("OnFailure", 3, false));
        assert!(!restarts("Never", 3, false));
        assert!(!restarts("Always", 0, true));
        assert!(restarts("Always", 1, true));
        assert!(!restarts("Never", 1, true));
    }
}
