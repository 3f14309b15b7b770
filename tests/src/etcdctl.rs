//! The real `etcdctl` (v3 API) against a raftkv cluster.
//!
//! raftkv claims etcd v3 compatibility; the strongest evidence is etcd's own CLI
//! working against it and printing exactly what it prints for etcd.
//!
//! Against a TLS cluster etcdctl gets `https://` endpoints and `--cacert --cert
//! --key` ([`Etcdctl::with_tls`], or `Cluster::etcdctl`).

use crate::binaries::etcdctl_bin;
use crate::command::{self, CmdOutput};
use crate::tls::ClientTls;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// etcdctl pointed at a fixed set of endpoints.
#[derive(Debug, Clone)]
pub struct Etcdctl {
    bin: PathBuf,
    endpoints: String,
    /// `--cacert --cert --key`, when talking TLS.
    tls_flags: Vec<String>,
    /// Names resolve through this file instead of /etc/hosts.
    hosts_file: Option<PathBuf>,
}

impl Etcdctl {
    /// `endpoints` are `127.0.0.1:PORT` client endpoints.
    pub fn new(endpoints: &[String]) -> Result<Etcdctl> {
        Ok(Etcdctl {
            bin: etcdctl_bin()?,
            endpoints: endpoints.join(","),
            tls_flags: Vec::new(),
            hosts_file: None,
        })
    }

    /// Talk TLS with `tls`'s files: every endpoint given without a scheme
    /// becomes `https://HOST:PORT`.
    pub fn with_tls(self, tls: &ClientTls) -> Etcdctl {
        self.over_tls(tls.etcdctl_flags())
    }

    /// Talk TLS trusting `ca`, presenting no client certificate.
    pub fn with_trusted_ca(self, ca: &Path) -> Etcdctl {
        self.over_tls(vec![format!("--cacert={}", ca.display())])
    }

    /// Resolve names through `hosts` (a hosts file, such as the kubelet
    /// stand-in's cluster DNS for the host) instead of /etc/hosts: etcdctl
    /// then runs in a private mount namespace with `hosts` bound over
    /// /etc/hosts (`unshare`; needs root, as the stand-in does).
    pub fn with_hosts_file(self, hosts: &Path) -> Etcdctl {
        Etcdctl {
            hosts_file: Some(hosts.to_path_buf()),
            ..self
        }
    }

    fn over_tls(self, tls_flags: Vec<String>) -> Etcdctl {
        let endpoints = self
            .endpoints
            .split(',')
            .map(|e| match e.contains("://") {
                true => e.to_string(),
                false => format!("https://{e}"),
            })
            .collect::<Vec<_>>()
            .join(",");
        Etcdctl {
            endpoints,
            tls_flags,
            ..self
        }
    }

    /// The `--endpoints` value etcdctl is run with.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// Run `etcdctl ARGS...`; the result may be a failure, see [`CmdOutput::ok`].
    pub async fn run(&self, args: &[&str]) -> Result<CmdOutput> {
        self.run_inner(args, None).await
    }

    /// Run `etcdctl ARGS...` with `input` on stdin (e.g. `etcdctl txn`).
    pub async fn run_with_stdin(&self, args: &[&str], input: &str) -> Result<CmdOutput> {
        self.run_inner(args, Some(input)).await
    }

    async fn run_inner(&self, args: &[&str], input: Option<&str>) -> Result<CmdOutput> {
        let mut full = vec![
            format!("--endpoints={}", self.endpoints),
            "--dial-timeout=5s".to_string(),
            "--command-timeout=15s".to_string(),
        ];
        full.extend(self.tls_flags.iter().cloned());
        full.extend(args.iter().map(|a| a.to_string()));
        let (program, full) = match &self.hosts_file {
            None => (self.bin.clone(), full),
            Some(hosts) => {
                let mut wrapped: Vec<String> = [
                    "--mount",
                    "--propagation",
                    "private",
                    "/bin/sh",
                    "-c",
                    r#"mount --bind "$0" /etc/hosts && exec "$@""#,
                ]
                .map(String::from)
                .to_vec();
                wrapped.push(hosts.display().to_string());
                wrapped.push(self.bin.display().to_string());
                wrapped.extend(full);
                (PathBuf::from("unshare"), wrapped)
            }
        };
        command::run(
            &program,
            &full,
            &[("ETCDCTL_API", "3")],
            // A stray ETCDCTL_ENDPOINTS etc. in the environment must not redirect etcdctl.
            &["ETCDCTL_"],
            input,
            Duration::from_secs(40),
        )
        .await
    }
}
