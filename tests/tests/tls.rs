//! TLS on the client and peer ports (issue 16, item 7 "No TLS"), checked as
//! its "Done means" point 2 asks: on a 3-member cluster with TLS and client
//! certificate authentication on both ports,
//!
//! - etcdctl with `--cacert --cert --key` and the three `https://` endpoints
//!   writes and reads;
//! - a plaintext client, a client without a certificate, and a client whose
//!   certificate comes from another CA (with the right common name) are
//!   refused on the client port and on the peer port;
//! - every member's certificates are replaced on disk while a client writes,
//!   new handshakes see the new certificates, and not one write fails.
//!
//! The cluster comes from `ClusterOptions::tls` (see `raftkv_tests::tls`): one
//! CA per cluster, a client-port and a peer-port certificate per member, both
//! ports with `--client-cert-auth`. What a port serves, and whether it answers
//! a client, is read with raw handshakes (`raftkv_tests::tls_probe`), which
//! also reach the peer port, where no etcd client goes. Each refusal is shown
//! next to a control: the same probe with the cluster's own certificate is
//! answered on the same port.

use anyhow::{bail, ensure, Context, Result};
use etcd_client::Client;
use raftkv_tests::certs::{Ca, Issued};
use raftkv_tests::kv::{diff_maps, get_prefix, get_value_serializable};
use raftkv_tests::tls::ClientTls;
use raftkv_tests::tls_probe::{greet_plaintext, Greeting, Probe};
use raftkv_tests::wait::{self, CONVERGE_TIMEOUT};
use raftkv_tests::{grpc, Cluster, ClusterOptions, Etcdctl, Member};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::CertificateDer;

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_with_client_certificates_puts_and_gets_over_https() -> Result<()> {
    let cluster = ClusterOptions::new().tls().start(3).await?;
    let root = cluster.client_tls().context("a TLS cluster")?.clone();
    let ctl = cluster.etcdctl()?;
    let endpoints: Vec<&str> = ctl.endpoints().split(',').collect();
    ensure!(
        endpoints.len() == 3 && endpoints.iter().all(|e| e.starts_with("https://")),
        "etcdctl should get the three https:// endpoints, got {endpoints:?}"
    );

    let put = ctl.run(&["put", "tls/k", "over tls"]).await?.ok()?;
    ensure!(put.stdout == "OK\n", "put printed {:?}", put.stdout);
    let got = ctl.run(&["get", "tls/k"]).await?.ok()?;
    ensure!(
        got.stdout == "tls/k\nover tls\n",
        "get printed {:?}",
        got.stdout
    );

    // Each member alone serves it too (a linearizable read through each).
    for m in cluster.members() {
        let one = Etcdctl::new(&[m.client_endpoint()])?.with_tls(&root);
        let got = one.run(&["get", "tls/k"]).await?.ok()?;
        ensure!(
            got.stdout == "tls/k\nover tls\n",
            "get through {} alone printed {:?}",
            m.name,
            got.stdout
        );
    }

    // The members advertise https:// URLs for both ports.
    let list = ctl.run(&["member", "list"]).await?.ok()?;
    for m in cluster.members() {
        let (peer, client) = (m.peer_url(), m.client_url());
        ensure!(
            peer.starts_with("https://") && client.starts_with("https://"),
            "the harness gave {} {peer} and {client}",
            m.name
        );
        ensure!(
            list.stdout
                .lines()
                .any(|l| l.contains(&format!(", {}, {peer}, {client}", m.name))),
            "member list does not show {} with {peer} and {client}:\n{}",
            m.name,
            list.stdout
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_and_other_ca_clients_are_refused_on_the_client_and_peer_ports() -> Result<()> {
    let cluster = ClusterOptions::new().tls().start(3).await?;
    let tls = cluster.tls().context("a TLS cluster")?;
    let root = tls.root_client().clone();

    // The cluster's own credentials: root's client certificate on the client
    // port, a member's peer certificate on the peer port.
    let root_probe = Probe::from_files(&root)?;
    let m1 = tls.member_files("m1");
    let member_probe = Probe::from_files(&ClientTls {
        ca: tls.ca_file(),
        cert: m1.peer_cert,
        key: m1.peer_key,
    })?;
    // A stranger: another CA's certificates, named like root and like a
    // member. The probe trusts the cluster's CA, so only the member's refusal
    // of the stranger's certificate can make its greeting fail.
    let stranger_ca = Ca::new("stranger CA")?;
    let stranger_client = stranger_ca.issue_client("root")?;
    let stranger_member = stranger_ca.issue_member("m1", "127.0.0.1".parse()?)?;
    let stranger_client_probe = probe_presenting(tls.ca().cert_der(), &stranger_client)?;
    let stranger_member_probe = probe_presenting(tls.ca().cert_der(), &stranger_member)?;
    let anonymous_probe = Probe::without_client_cert(&tls.ca_file())?;

    for m in cluster.members() {
        for (port, addr, own) in [
            ("client", m.client_endpoint(), &root_probe),
            ("peer", m.peer_endpoint(), &member_probe),
        ] {
            let what = |who: &str| format!("{who} on {}'s {port} port {addr}", m.name);
            let control = own.greet(&addr).await?;
            ensure!(
                control.is_answered(),
                "{}: {control:?}",
                what("the cluster's own certificate")
            );
            expect_refused(greet_plaintext(&addr).await?, &what("plaintext HTTP/2"))?;
            expect_refused(
                anonymous_probe.greet(&addr).await?,
                &what("TLS without a client certificate"),
            )?;
            let stranger = match port {
                "client" => &stranger_client_probe,
                _ => &stranger_member_probe,
            };
            expect_refused(
                stranger.greet(&addr).await?,
                &what("a certificate from another CA"),
            )?;
        }
    }

    // The same through etcd-client, the way an application would try: a
    // plaintext client, and one presenting the stranger's `root` certificate.
    let endpoints = cluster.endpoints();
    let stranger_files = ClientTls {
        ca: tls.ca_file(),
        cert: cluster.root().join("stranger-root.pem"),
        key: cluster.root().join("stranger-root-key.pem"),
    };
    stranger_client.write(&stranger_files.cert, &stranger_files.key)?;
    let plaintext = try_put(&endpoints, None, "tls/plaintext").await;
    ensure!(
        plaintext.is_err(),
        "a plaintext etcd-client wrote through {endpoints:?}"
    );
    let stranger = try_put(&endpoints, Some(&stranger_files), "tls/stranger").await;
    ensure!(
        stranger.is_err(),
        "etcd-client with another CA's certificate wrote through {endpoints:?}"
    );

    // Root's certificate writes, and nothing the others tried is there.
    try_put(&endpoints, Some(&root), "tls/root")
        .await
        .context("control: root's certificate should write")?;
    let mut client = cluster.client().await?;
    let (found, _) = get_prefix(&mut client, "tls/").await?;
    ensure!(
        found.keys().eq(["tls/root"]),
        "after the refused clients, tls/ holds {found:?}"
    );
    Ok(())
}

/// A probe that trusts `ca` and presents `issued`.
fn probe_presenting(ca: CertificateDer<'static>, issued: &Issued) -> Result<Probe> {
    Probe::new(ca, Some((vec![issued.cert_der()], issued.key_der())))
}

fn expect_refused(greeting: Greeting, who: &str) -> Result<()> {
    match greeting {
        Greeting::Refused(_) => Ok(()),
        Greeting::Answered => bail!("{who} was answered in HTTP/2: it should be refused"),
    }
}

/// Put `key` through a new etcd-client on `endpoints` (TLS with `tls` if
/// given). A put that neither succeeds nor fails within 15 s counts as failed.
async fn try_put(endpoints: &[String], tls: Option<&ClientTls>, key: &str) -> Result<()> {
    let put = async {
        let mut client = grpc::connect_with(endpoints, tls, Duration::from_secs(5)).await?;
        client.put(key, "written", None).await?;
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(15), put)
        .await
        .context("the put got no answer within 15s")?
}

/// Writes put in a loop by a task of its own; a write that fails is kept,
/// not retried.
struct Writer {
    acked: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<BTreeMap<String, String>>,
}

/// The writer's bound on its writes, whatever happens.
const MAX_WRITES: u64 = 20_000;

impl Writer {
    /// Put `rotate/<n>` = `v<n>` one after another through `client`; every
    /// tenth write goes through a new client of its own on `endpoints`, so
    /// new handshakes happen while the certificates change.
    fn start(client: Client, endpoints: Vec<String>, tls: ClientTls) -> Writer {
        let acked = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (acked, failures, stop) = (acked.clone(), failures.clone(), stop.clone());
            async move {
                let mut client = client;
                let mut written = BTreeMap::new();
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) && n < MAX_WRITES {
                    let (key, value) = (format!("rotate/{n:06}"), format!("v{n}"));
                    let result = match n % 10 {
                        9 => put_on_new_client(&endpoints, &tls, &key, &value).await,
                        _ => client
                            .put(key.as_str(), value.as_str(), None)
                            .await
                            .map(drop)
                            .map_err(anyhow::Error::from),
                    };
                    match result {
                        Ok(()) => {
                            written.insert(key, value);
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(err) => failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("{key}: {err:#}")),
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                written
            }
        });
        Writer {
            acked,
            failures,
            stop,
            task,
        }
    }

    fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    fn failures(&self) -> Vec<String> {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Wait until `n` writes in all have been acknowledged.
    async fn wait_acked(&self, n: usize, when: &str) -> Result<()> {
        wait::until(
            CONVERGE_TIMEOUT,
            format!("{n} acknowledged writes {when}"),
            || async {
                match self.acked() >= n {
                    true => Ok(Some(())),
                    false => bail!(
                        "{} acknowledged, failures: {:?}",
                        self.acked(),
                        self.failures()
                    ),
                }
            },
        )
        .await
    }

    /// Stop writing; what was acknowledged, and every failure.
    async fn stop(self) -> Result<(BTreeMap<String, String>, Vec<String>)> {
        self.stop.store(true, Ordering::SeqCst);
        let failures = self.failures.clone();
        let written = self.task.await.context("the writer task panicked")?;
        let failures = failures.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok((written, failures))
    }
}

async fn put_on_new_client(
    endpoints: &[String],
    tls: &ClientTls,
    key: &str,
    value: &str,
) -> Result<()> {
    let mut client = grpc::connect_with(endpoints, Some(tls), grpc::REQUEST_TIMEOUT).await?;
    client.put(key, value, None).await?;
    Ok(())
}

/// A certificate the harness issued, and its serial for messages.
#[derive(Clone)]
struct Known {
    der: CertificateDer<'static>,
    serial: String,
}

impl Known {
    fn of(issued: &Issued) -> Known {
        Known {
            der: issued.cert_der(),
            serial: issued.serial.to_string(),
        }
    }
}

/// The certificates a member's files hold now: (client port, peer port).
fn files_hold(cluster: &Cluster, name: &str) -> Result<[Known; 2]> {
    let certs = cluster
        .tls()
        .and_then(|tls| tls.member_certs(name))
        .with_context(|| format!("no certificates issued to {name}"))?;
    Ok([Known::of(&certs.client), Known::of(&certs.peer)])
}

/// The certificates a member's client and peer ports serve now, each read
/// from a fresh handshake.
async fn served(probe: &Probe, m: &Member) -> Result<[CertificateDer<'static>; 2]> {
    Ok([
        probe.server_certificate(&m.client_endpoint()).await?,
        probe.server_certificate(&m.peer_endpoint()).await?,
    ])
}

/// What `seen` is: `old`, `new`, or neither.
fn describe(seen: &CertificateDer<'_>, old: &Known, new: &Known) -> String {
    if *seen == new.der {
        format!("the rotated certificate (serial {})", new.serial)
    } else if *seen == old.der {
        format!("the replaced certificate (serial {})", old.serial)
    } else {
        "a certificate the test did not issue".to_string()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_rotate_under_a_writing_client_without_one_failed_write() -> Result<()> {
    let mut cluster = ClusterOptions::new().tls().start(3).await?;
    cluster.wait_leader().await?;
    let root = cluster.client_tls().context("a TLS cluster")?.clone();
    let probe = Probe::from_files(&root)?;

    // Control: a fresh handshake shows what the member's files hold.
    for m in cluster.members() {
        let seen = served(&probe, m).await?;
        let held = files_hold(&cluster, &m.name)?;
        ensure!(
            seen[0] == held[0].der && seen[1] == held[1].der,
            "before any rotation {} serves other certificates than its files hold",
            m.name
        );
    }

    let writer = Writer::start(cluster.client().await?, cluster.endpoints(), root.clone());
    writer.wait_acked(20, "before any rotation").await?;

    for id in cluster.live_ids() {
        let acked_before = writer.acked();
        let name = cluster.member(id).name.clone();
        let old = files_hold(&cluster, &name)?;
        cluster.rotate_member_certs(id)?;
        let new = files_hold(&cluster, &name)?;
        ensure!(
            new[0].der != old[0].der && new[1].der != old[1].der,
            "{name}: re-issued the same certificates"
        );
        let member = cluster.member(id);
        wait::until(
            Duration::from_secs(10),
            format!("{name}'s client and peer ports to serve the rotated certificates"),
            || async {
                let seen = served(&probe, member).await?;
                if seen[0] == new[0].der && seen[1] == new[1].der {
                    return Ok(Some(()));
                }
                bail!(
                    "client port serves {}, peer port serves {}",
                    describe(&seen[0], &old[0], &new[0]),
                    describe(&seen[1], &old[1], &new[1])
                )
            },
        )
        .await?;
        // Writes go on after this member's rotation.
        writer
            .wait_acked(acked_before + 20, &format!("after rotating {name}"))
            .await?;
    }
    // Writes go on with every member rotated for a while longer than a member
    // takes to notice its new peer files (it looks at most once a second) and
    // dial the others again presenting its new certificate.
    let go_on_until = tokio::time::Instant::now() + Duration::from_secs(3);
    writer
        .wait_acked(writer.acked() + 50, "after every member rotated")
        .await?;
    tokio::time::sleep_until(go_on_until).await;
    let (written, failures) = writer.stop().await?;
    ensure!(
        failures.is_empty(),
        "{} of {} writes failed while certificates rotated: {failures:#?}",
        failures.len(),
        failures.len() + written.len()
    );

    // Every acknowledged write is there, read over a new connection (new
    // handshakes with the rotated certificates).
    let mut fresh = cluster.client().await?;
    let (found, _) = get_prefix(&mut fresh, "rotate/").await?;
    diff_maps(&written, &found).context("the keys written during the rotation")?;

    // Each member, reached alone over a new connection, gets the last write:
    // its client port takes new clients and its peers replicate to it after
    // the rotation.
    let (last_key, last_value) = written.iter().next_back().context("no write at all")?;
    for m in cluster.members() {
        let client = m.client().await?;
        let value = wait::until(
            CONVERGE_TIMEOUT,
            format!("{} to have {last_key}", m.name),
            || {
                let mut client = client.clone();
                async move { get_value_serializable(&mut client, last_key).await }
            },
        )
        .await?;
        ensure!(
            value == *last_value,
            "{} has {last_key} = {value:?}",
            m.name
        );
    }

    // A new etcdctl (Go's TLS) trusts the rotated certificates as well.
    let got = cluster.etcdctl()?.run(&["get", last_key]).await?.ok()?;
    ensure!(
        got.stdout == format!("{last_key}\n{last_value}\n"),
        "etcdctl get after the rotation printed {:?}",
        got.stdout
    );
    Ok(())
}

/// With `--client-cert-auth` and auth enabled, a call without a token acts as
/// the user its certificate's common name names, as etcd's does: root's
/// certificate manages auth, alice's reads and writes only what her role
/// grants, and a name no user has gets nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_names_the_user_of_a_call_without_a_token() -> Result<()> {
    let cluster = ClusterOptions::new().tls().start(1).await?;
    let tls = cluster.tls().context("a TLS cluster")?;
    let (alice, mallory) = (tls.issue_client("alice")?, tls.issue_client("mallory")?);
    let endpoints = cluster.endpoints();
    let mut setup = cluster.client().await?;
    raftkv_tests::auth::enable_with_root_and_alice(&mut setup, "alicepw").await?;

    // Root's certificate, no password: still root.
    let mut root = cluster.client().await?;
    root.put("secret", "s", None).await?;
    ensure!(
        root.user_list()
            .await?
            .users()
            .contains(&"alice".to_string()),
        "root's certificate could not list users"
    );
    let denied = |r: Result<etcd_client::PutResponse, etcd_client::Error>| {
        r.err()
            .and_then(|e| grpc::grpc_status(&e).map(|s| s.code()))
            == Some(tonic::Code::PermissionDenied)
    };
    let mut alice = grpc::connect_with(&endpoints, Some(&alice), grpc::REQUEST_TIMEOUT).await?;
    alice.put("app/a", "1", None).await?;
    ensure!(
        denied(alice.put("secret", "alice was here", None).await),
        "alice's certificate wrote outside her role"
    );
    let mut mallory = grpc::connect_with(&endpoints, Some(&mallory), grpc::REQUEST_TIMEOUT).await?;
    ensure!(
        denied(mallory.put("app/m", "1", None).await),
        "a certificate naming no user wrote"
    );
    let secret = root.get("secret", None).await?;
    ensure!(
        secret.kvs().first().map(|kv| kv.value()) == Some(&b"s"[..]),
        "secret is {:?}",
        secret.kvs()
    );
    Ok(())
}
