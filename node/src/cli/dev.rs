//! `raftkv dev`: a local cluster of N member processes on 127.0.0.1.
//!
//! Member i (1-based) listens on client port `base + 10000*(i-1)` (2379, 12379,
//! 22379, ... as etcd's local Procfile does), peer port +1 and metrics port +2,
//! keeps its data in `<data-dir>/m<i>` and its log in `<data-dir>/m<i>.log`.
//! Ctrl-C stops every member cleanly; the data stays for the next run.
//! `--tls` serves both ports over TLS with client certificates required
//! (see `dev_certs`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;

use super::dev_certs::DevCerts;
use tokio::process::Child;
use tokio::process::Command;

#[derive(clap::Args, Debug, Clone)]
pub struct DevArgs {
    /// Number of members (1 to 6).
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    #[arg(long, default_value = "raftkv-dev.data")]
    pub data_dir: PathBuf,
    /// Client port of the first member.
    #[arg(long, default_value_t = 2379)]
    pub base_port: u16,
    /// Client and peer ports over TLS, with client certificates required
    /// (certificates made once in `<data-dir>/tls`).
    #[arg(long)]
    pub tls: bool,
}

struct DevMember {
    name: String,
    client: u16,
    metrics: u16,
    child: Child,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 6 {
        bail!("--nodes must be between 1 and 6");
    }
    let last = args.base_port as u32 + 10_000 * (args.nodes as u32 - 1) + 2;
    if last > u16::MAX as u32 {
        bail!(
            "--base-port {} leaves no room for {} members",
            args.base_port,
            args.nodes
        );
    }
    let port = |i: u16, off: u16| args.base_port + 10_000 * (i - 1) + off;
    let scheme = if args.tls { "https" } else { "http" };
    let initial_cluster: Vec<String> = (1..=args.nodes)
        .map(|i| format!("{i}={scheme}://127.0.0.1:{}", port(i, 1)))
        .collect();
    let initial_cluster = initial_cluster.join(",");
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let certs = if args.tls {
        Some(DevCerts::ensure(&args.data_dir.join("tls"))?)
    } else {
        None
    };
    let tls_flags: Vec<std::ffi::OsString> = match &certs {
        None => Vec::new(),
        Some(c) => [
            ("--cert-file", &c.member_cert),
            ("--key-file", &c.member_key),
            ("--trusted-ca-file", &c.ca),
            ("--peer-cert-file", &c.member_cert),
            ("--peer-key-file", &c.member_key),
            ("--peer-trusted-ca-file", &c.ca),
        ]
        .into_iter()
        .flat_map(|(flag, path)| [flag.into(), path.into()])
        .chain([
            "--client-cert-auth".into(),
            "--peer-client-cert-auth".into(),
        ])
        .collect(),
    };
    let exe = std::env::current_exe().context("locating the raftkv binary")?;

    let mut members = Vec::new();
    for i in 1..=args.nodes {
        let name = format!("m{i}");
        let log_path = args.data_dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new(&exe)
            .arg("serve")
            .args(["--name", &name, "--id", &i.to_string()])
            .arg("--data-dir")
            .arg(args.data_dir.join(&name))
            .args([
                "--listen-client-urls",
                &format!("{scheme}://127.0.0.1:{}", port(i, 0)),
            ])
            .args([
                "--listen-peer-urls",
                &format!("{scheme}://127.0.0.1:{}", port(i, 1)),
            ])
            .args([
                "--listen-metrics-urls",
                &format!("http://127.0.0.1:{}", port(i, 2)),
            ])
            .args(["--initial-cluster", &initial_cluster])
            .args(&tls_flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting member {name}"))?;
        members.push(DevMember {
            name,
            client: port(i, 0),
            metrics: port(i, 2),
            child,
        });
    }

    println!("raftkv dev: {} members on 127.0.0.1", members.len());
    for m in &members {
        println!(
            "  {}  client 127.0.0.1:{}  metrics http://127.0.0.1:{}/metrics  log {}",
            m.name,
            m.client,
            m.metrics,
            args.data_dir.join(format!("{}.log", m.name)).display()
        );
    }
    let endpoints: Vec<String> = members
        .iter()
        .map(|m| format!("{scheme}://127.0.0.1:{}", m.client))
        .collect();
    let endpoints = endpoints.join(",");
    // etcdctl's and raftkv's TLS flags are the same.
    let client_flags = match &certs {
        None => String::new(),
        Some(c) => format!(
            " --cacert {} --cert {} --key {}",
            c.ca.display(),
            c.client_cert.display(),
            c.client_key.display()
        ),
    };

    let result = tokio::select! {
        r = wait_ready(&members) => r.map(|_| true),
        _ = tokio::signal::ctrl_c() => Ok(false),
    };
    match result {
        Ok(true) => {
            println!("cluster is ready. Try:");
            println!(
                "  ETCDCTL_API=3 etcdctl --endpoints={endpoints}{client_flags} put hello world"
            );
            println!("  ETCDCTL_API=3 etcdctl --endpoints={endpoints}{client_flags} get hello");
            println!("  raftkv status --endpoints={endpoints}{client_flags}");
            println!("Ctrl-C stops the cluster.");
            let exited = watch_children(&mut members).await;
            stop_all(&mut members).await;
            if let Some(name) = exited {
                bail!("member {name} exited unexpectedly; see its log");
            }
            Ok(())
        }
        Ok(false) => {
            stop_all(&mut members).await;
            Ok(())
        }
        Err(e) => {
            stop_all(&mut members).await;
            Err(e)
        }
    }
}

/// Until Ctrl-C (returns None) or a member exits by itself (returns its
/// name). A member that stopped because it was removed from the cluster is
/// reported and left out; the others go on.
async fn watch_children(members: &mut [DevMember]) -> Option<String> {
    let mut removed = std::collections::BTreeSet::new();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return None,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                for m in members.iter_mut() {
                    if removed.contains(&m.name) {
                        continue;
                    }
                    let Ok(Some(status)) = m.child.try_wait() else { continue };
                    if status.code() == Some(i32::from(crate::errors::NO_LONGER_MEMBER_EXIT_CODE)) {
                        println!(
                            "member {} stopped: it was removed from the cluster, or its data dir replaced",
                            m.name
                        );
                        removed.insert(m.name.clone());
                        continue;
                    }
                    return Some(m.name.clone());
                }
            }
        }
    }
}

async fn wait_ready(members: &[DevMember]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for m in members {
        loop {
            if http_get_ok(m.metrics, "/readyz").await {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "member {} did not become ready within 60s; see its log",
                    m.name
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// A minimal HTTP/1.1 GET on loopback: true on a 200 answer.
pub async fn http_get_ok(port: u16, path: &str) -> bool {
    use tokio::io::AsyncReadExt;
    use tokio::io::AsyncWriteExt;
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    buf.starts_with(b"HTTP/1.1 200")
}

async fn stop_all(members: &mut [DevMember]) {
    for m in members.iter() {
        if let Some(pid) = m.child.id() {
            // SAFETY: plain kill(2) on a child we started.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
    for m in members.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(10), m.child.wait()).await {
            Ok(_) => println!("stopped {}", m.name),
            Err(_) => {
                let _ = m.child.kill().await;
                println!("killed {} (did not stop within 10s)", m.name);
            }
        }
    }
}
