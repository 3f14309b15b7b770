//! Startup, readiness and liveness probes (stand-in for the kubelet's prober).
//!
//! Like the kubelet, probes run from the node, not from inside the pod:
//! `httpGet` and `tcpSocket` connect to the pod's IP over the bridge; `exec`
//! runs the command inside the container's namespaces (network, mount, UTS) with
//! the container's environment. `initialDelaySeconds`, `periodSeconds`,
//! `timeoutSeconds`, `failureThreshold` and `successThreshold` are honoured by the
//! pure [`ProbeState`] machine below. Ports are numbers or container port names.
//! Not supported: `grpc` probes and `scheme: HTTPS` (the container gets a clear
//! CreateContainerConfigError naming the field); `httpHeaders` are sent.

use super::command::{is_executable, resolve_program, StartError};
use super::container::{ContainerCtx, ProbeEvent};
use super::sandbox::{self, ProcessSpec};
use k8s_openapi::api::core::v1::LifecycleHandler;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    Http {
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        port: u16,
    },
    Exec {
        command: Vec<String>,
    },
}

/// A probe with its timings resolved (Kubernetes' defaults filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

fn port_of(port: &IntOrString, container: &Container) -> Result<u16, StartError> {
    let unsupported = |m: String| StartError::new("CreateContainerConfigError", m);
    match port {
        IntOrString::Int(n) => {
            u16::try_from(*n).map_err(|_| unsupported(format!("probe port {n} out of range")))
        }
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| {
                unsupported(format!(
                    "probe port {name:?} names no port of container {:?}",
                    container.name
                ))
            }),
    }
}

impl ProbeSpec {
    /// The spec of `probe` on `container`, or why it cannot run here.
    pub fn resolve(probe: &Probe, container: &Container) -> Result<ProbeSpec, StartError> {
        let unsupported = |m: String| StartError::new("CreateContainerConfigError", m);
        let action = if let Some(http) = &probe.http_get {
            if http
                .scheme
                .as_deref()
                .is_some_and(|s| !s.eq_ignore_ascii_case("HTTP"))
            {
                return Err(unsupported(format!(
                    "httpGet scheme {:?} is not supported by the raftkv kubelet stand-in (HTTP only)",
                    http.scheme.as_deref().unwrap_or("")
                )));
            }
            let mut path = http.path.clone().unwrap_or_else(|| "/".to_string());
            if !path.starts_with('/') {
                path.insert(0, '/');
            }
            ProbeAction::Http {
                port: port_of(&http.port, container)?,
                path,
                headers: http
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
            }
        } else if let Some(tcp) = &probe.tcp_socket {
            ProbeAction::Tcp {
                port: port_of(&tcp.port, container)?,
            }
        } else if let Some(exec) = &probe.exec {
            let command = exec.command.clone().unwrap_or_default();
            if command.is_empty() {
                return Err(unsupported("exec probe with an empty command".to_string()));
            }
            ProbeAction::Exec { command }
        } else if probe.grpc.is_some() {
            return Err(unsupported(
                "grpc probes are not supported by the raftkv kubelet stand-in".to_string(),
            ));
        } else {
            return Err(unsupported("probe has no handler".to_string()));
        };
        let secs = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(v.unwrap_or(default).max(min) as u64)
        };
        Ok(ProbeSpec {
            action,
            initial_delay: secs(probe.initial_delay_seconds, 0, 0),
            period: secs(probe.period_seconds, 10, 1),
            timeout: secs(probe.timeout_seconds, 1, 1),
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
            success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
        })
    }
}

/// The result of a probe as the thresholds make it: consecutive successes and
/// failures, and the outcome they add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeState {
    successes: u32,
    failures: u32,
    /// The current outcome.
    pub healthy: bool,
}

impl ProbeState {
    /// Readiness and startup start unhealthy (not ready, not started); liveness
    /// starts healthy, as the kubelet does.
    pub fn new(initially_healthy: bool) -> ProbeState {
        ProbeState {
            successes: 0,
            failures: 0,
            healthy: initially_healthy,
        }
    }

    /// Record one probe result; returns the new outcome if it changed.
    pub fn record(&mut self, success: bool, spec: &ProbeSpec) -> Option<bool> {
        if success {
            self.successes += 1;
            self.failures = 0;
            if !self.healthy && self.successes >= spec.success_threshold {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.healthy && self.failures >= spec.failure_threshold {
                self.healthy = false;
                return Some(false);
            }
            // Startup probes start unhealthy and fail for good after the threshold.
            if !self.healthy && self.failures == spec.failure_threshold {
                return Some(false);
            }
        }
        None
    }
}

/// One HTTP GET from the node to `ip:port`: success is a status in 200..400.
pub async fn http_get(
    ip: Ipv4Addr,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(), String> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((ip, port))
            .await
            .map_err(|e| format!("connect {ip}:{port}: {e}"))?;
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.34\r\nAccept: */*\r\nConnection: close\r\n"
        );
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut head = Vec::new();
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 4096 {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no HTTP status line in {:?}", line.lines().next()))?;
        if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {status}"))
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("timeout after {timeout:?}"))?
}

/// One TCP connect from the node to `ip:port`.
pub async fn tcp_connect(ip: Ipv4Addr, port: u16, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((ip, port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("dial tcp {ip}:{port}: {e}")),
        Err(_) => Err(format!("dial tcp {ip}:{port}: timeout")),
    }
}

/// Probing and hooks of one running container (used by `container.rs`).
impl ContainerCtx {
    pub(super) async fn run_hook(
        &self,
        hook: &LifecycleHandler,
        spec: &ProcessSpec,
    ) -> Result<(), String> {
        if let Some(exec) = &hook.exec {
            let argv = exec.command.clone().unwrap_or_default();
            return self.exec(argv, spec, Duration::from_secs(3600)).await;
        }
        if let Some(http) = &hook.http_get {
            let probe = k8s_openapi::api::core::v1::Probe {
                http_get: Some(http.clone()),
                ..Default::default()
            };
            let ps = ProbeSpec::resolve(&probe, &self.container).map_err(|e| e.to_string())?;
            if let ProbeAction::Http {
                port,
                path,
                headers,
            } = ps.action
            {
                return http_get(self.ip(), port, &path, &headers, Duration::from_secs(30)).await;
            }
        }
        if let Some(sleep) = &hook.sleep {
            tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
            return Ok(());
        }
        Err("unsupported lifecycle handler (the stand-in runs exec, httpGet and sleep)".into())
    }

    pub(super) fn ip(&self) -> std::net::Ipv4Addr {
        self.facts
            .pod_ip
            .parse()
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)
    }

    /// Run `argv` in the container's namespaces; success is exit code 0.
    pub(super) async fn exec(
        &self,
        argv: Vec<String>,
        base: &ProcessSpec,
        timeout: Duration,
    ) -> Result<(), String> {
        let program = argv.first().ok_or("empty exec command")?;
        let image = self.container.image.clone().unwrap_or_default();
        let program = resolve_program(program, &self.ctx.bin_dir, &image, is_executable)
            .map_err(|e| e.to_string())?;
        let spec = ProcessSpec {
            program,
            argv: argv.clone(),
            ..base.clone()
        };
        let mut child = sandbox::spawn(&spec, None).map_err(|e| format!("{e:#}"))?;
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(s)) if s.success() => Ok(()),
            Ok(Ok(s)) => Err(format!("command {argv:?} exited with {s}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => {
                if let Some(pid) = child.id() {
                    sandbox::signal_group(pid, libc::SIGKILL);
                }
                let _ = child.wait().await;
                Err(format!("command {argv:?} timed out after {timeout:?}"))
            }
        }
    }

    pub(super) async fn probe_once(
        &self,
        spec: &ProbeSpec,
        base: &ProcessSpec,
    ) -> Result<(), String> {
        match &spec.action {
            ProbeAction::Http {
                port,
                path,
                headers,
            } => http_get(self.ip(), *port, path, headers, spec.timeout).await,
            ProbeAction::Tcp { port } => tcp_connect(self.ip(), *port, spec.timeout).await,
            ProbeAction::Exec { command } => self.exec(command.clone(), base, spec.timeout).await,
        }
    }

    pub(super) async fn probe_loop(self, base: ProcessSpec, events: mpsc::Sender<ProbeEvent>) {
        let resolve = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref().map(|p| ProbeSpec::resolve(p, &self.container))
        };
        let (startup, readiness, liveness) = match (
            resolve(&self.container.startup_probe).transpose(),
            resolve(&self.container.readiness_probe).transpose(),
            resolve(&self.container.liveness_probe).transpose(),
        ) {
            (Ok(s), Ok(r), Ok(l)) => (s, r, l),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                let _ = events
                    .send(ProbeEvent::Kill(format!("probe cannot run: {e}")))
                    .await;
                return;
            }
        };
        if let Some(spec) = startup {
            tokio::time::sleep(spec.initial_delay).await;
            let mut state = ProbeState::new(false);
            loop {
                let result = self.probe_once(&spec, &base).await;
                match state.record(result.is_ok(), &spec) {
                    Some(true) => break,
                    Some(false) => {
                        let why =
                            format!("Startup probe failed: {}", result.err().unwrap_or_default());
                        let _ = events.send(ProbeEvent::Kill(why)).await;
                        return;
                    }
                    None => {}
                }
                tokio::time::sleep(spec.period).await;
            }
        }
        let _ = events.send(ProbeEvent::Started).await;
        let ready_loop = async {
            let Some(spec) = readiness else { return };
            tokio::time::sleep(spec.initial_delay).await;
            let mut state = ProbeState::new(false);
            loop {
                let result = self.probe_once(&spec, &base).await;
                if let Some(r) = state.record(result.is_ok(), &spec) {
                    if let Err(e) = &result {
                        tracing::info!(
                            "pod {}: container {}: readiness probe failed: {e}",
                            self.facts.hostname,
                            self.container.name
                        );
                    }
                    let _ = events.send(ProbeEvent::Ready(r)).await;
                }
                tokio::time::sleep(spec.period).await;
            }
        };
        let live_loop = async {
            let Some(spec) = liveness else { return };
            tokio::time::sleep(spec.initial_delay).await;
            let mut state = ProbeState::new(true);
            loop {
                let result = self.probe_once(&spec, &base).await;
                if state.record(result.is_ok(), &spec) == Some(false) {
                    let why = format!(
                        "Liveness probe failed: {}",
                        result.err().unwrap_or_default()
                    );
                    let _ = events.send(ProbeEvent::Kill(why)).await;
                    return;
                }
                tokio::time::sleep(spec.period).await;
            }
        };
        tokio::join!(ready_loop, live_loop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container() -> Container {
        serde_json::from_value(
            json!({"name": "op", "ports": [{"name": "metrics", "containerPort": 8080}]}),
        )
        .unwrap()
    }

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn specs_resolve_named_ports_and_defaults() {
        let spec = ProbeSpec::resolve(
            &probe(
                json!({"httpGet": {"path": "healthz", "port": "metrics"}, "failureThreshold": 6}),
            ),
            &container(),
        )
        .unwrap();
        assert_eq!(
            spec.action,
            ProbeAction::Http {
                port: 8080,
                path: "/healthz".into(),
                headers: vec![]
            }
        );
        assert_eq!(spec.period, Duration::from_secs(10));
        assert_eq!(spec.timeout, Duration::from_secs(1));
        assert_eq!(spec.failure_threshold, 6);
        assert_eq!(spec.success_threshold, 1);
        let err = ProbeSpec::resolve(&probe(json!({"tcpSocket": {"port": "nope"}})), &container())
            .unwrap_err();
        assert!(err.message.contains("\"nope\""), "{}", err.message);
        let err =
            ProbeSpec::resolve(&probe(json!({"grpc": {"port": 1}})), &container()).unwrap_err();
        assert!(err.message.contains("grpc"));
        let err = ProbeSpec::resolve(
            &probe(json!({"httpGet": {"port": 1, "scheme": "HTTPS"}})),
            &container(),
        )
        .unwrap_err();
        assert!(err.message.contains("HTTPS"));
    }

    fn spec(failures: u32, successes: u32) -> ProbeSpec {
        ProbeSpec {
            action: ProbeAction::Tcp { port: 1 },
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failure_threshold: failures,
            success_threshold: successes,
        }
    }

    #[test]
    fn readiness_needs_success_threshold_and_drops_after_failure_threshold() {
        let s = spec(3, 2);
        let mut r = ProbeState::new(false);
        assert_eq!(r.record(true, &s), None);
        assert_eq!(r.record(false, &s), None); // resets the success count
        assert_eq!(r.record(true, &s), None);
        assert_eq!(r.record(true, &s), Some(true));
        assert_eq!(r.record(false, &s), None);
        assert_eq!(r.record(false, &s), None);
        assert_eq!(r.record(true, &s), None); // resets the failure count
        assert_eq!(r.record(false, &s), None);
        assert_eq!(r.record(false, &s), None);
        assert_eq!(r.record(false, &s), Some(false));
        assert!(!r.healthy);
    }

    #[test]
    fn liveness_starts_healthy_and_fails_once_at_the_threshold() {
        let s = spec(2, 1);
        let mut l = ProbeState::new(true);
        assert_eq!(l.record(false, &s), None);
        assert_eq!(l.record(false, &s), Some(false));
        assert_eq!(l.record(false, &s), None);
        assert_eq!(l.record(true, &s), Some(true));
    }

    #[test]
    fn startup_fails_for_good_at_the_threshold() {
        let s = spec(2, 1);
        let mut st = ProbeState::new(false);
        assert_eq!(st.record(false, &s), None);
        assert_eq!(st.record(false, &s), Some(false));
        let mut st = ProbeState::new(false);
        assert_eq!(st.record(false, &s), None);
        assert_eq!(st.record(true, &s), Some(true));
    }

    #[tokio::test]
    async fn http_and_tcp_probes_judge_real_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for status in [200, 503] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                    )
                    .await;
            }
        });
        let ip = Ipv4Addr::LOCALHOST;
        let t = Duration::from_secs(2);
        assert_eq!(http_get(ip, port, "/readyz", &[], t).await, Ok(()));
        let err = http_get(ip, port, "/readyz", &[], t).await.unwrap_err();
        assert!(err.contains("503"), "{err}");
        assert!(tcp_connect(ip, 1, t).await.is_err());
    }
}
