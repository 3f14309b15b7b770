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
use std::path::PathBuf;
use std::time::Duration;

/// etcdctl pointed at a fixed set of endpoints.
#[derive(Debug, Clone)]
pub struct Etcdctl {
    bin: PathBuf,
    endpoints: String,
    /// `--cacert --cert --key`, when talking TLS.
    tls_flags: Vec<String>,
}

impl Etcdctl {
    /// `endpoints` are `127.0.0.1:PORT` client endpoints.
    pub fn new(endpoints: &[String]) -> Result<Etcdctl> {
        Ok(Etcdctl {
            bin: etcdctl_bin()?,
            endpoints: endpoints.join(","),
            tls_flags: Vec::new(),
        })
    }

    /// Talk TLS with `tls`'s files: every endpoint given without a scheme
    /// becomes `https://HOST:PORT`.
    pub fn with_tls(self, tls: &ClientTls) -> Etcdctl {
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
            tls_flags: tls.etcdctl_flags(),
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
        command::run(
            &self.bin,
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
