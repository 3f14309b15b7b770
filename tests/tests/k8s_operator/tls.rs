//! A RaftCluster with `spec.tls` (issue 18, "Done means" 3): the operator
//! issues its CA and certificates, the members speak only TLS on both
//! ports, the real etcdctl with the operator-issued client certificate works
//! and without it is refused, and a rotation asked for with the annotation
//! replaces the certificate every member serves, on both ports, while a
//! client writes, without one failed request.
//!
//! The test runs in the host's network namespace, where the pods' DNS names
//! do not resolve: etcdctl runs with the kubelet stand-in's hosts file as its
//! /etc/hosts, and the writer and the probes dial pod addresses and check the
//! certificate for the pod's (or the client Service's) name.

use crate::user::{
    apply, ensure_none_lost, events, jsonpath, kubectl, member_endpoints, wait_settled, NS,
};
use anyhow::{bail, ensure, Context, Result};
use raftkv_tests::control_plane::ControlPlane;
use raftkv_tests::tls::ClientTls;
use raftkv_tests::tls_probe::Probe;
use raftkv_tests::wait::until;
use raftkv_tests::Etcdctl;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;

const RC: &str = "secure";

fn pod_host(ordinal: usize) -> String {
    format!("{RC}-{ordinal}.{RC}-peer.{NS}.svc")
}

/// One key of a Secret, decoded, as the user gets it with kubectl.
async fn secret_key(plane: &ControlPlane, secret: &str, key: &str) -> Result<String> {
    let template = format!("go-template={{{{index .data \"{key}\" | base64decode}}}}");
    kubectl(plane, &["get", "secret", "-n", NS, secret, "-o", &template]).await
}

/// The client certificate Secret as etcdctl's three files in `dir`.
async fn client_files(plane: &ControlPlane, dir: &Path) -> Result<ClientTls> {
    let secret = format!("{RC}-client-tls");
    let tls = ClientTls {
        ca: dir.join("ca.crt"),
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    for (key, path) in [
        ("ca.crt", &tls.ca),
        ("tls.crt", &tls.cert),
        ("tls.key", &tls.key),
    ] {
        std::fs::write(path, secret_key(plane, &secret, key).await?)?;
    }
    Ok(tls)
}

/// The member certificate the member Secret holds now (DER).
async fn member_secret_cert(plane: &ControlPlane) -> Result<CertificateDer<'static>> {
    let pem = secret_key(plane, &format!("{RC}-member-tls"), "tls.crt").await?;
    CertificateDer::from_pem_slice(pem.as_bytes()).context("the member Secret's tls.crt")
}

/// The certificate each member serves on its client and peer ports, checked
/// for its pod's name (`endpoints`: the members' `IP:2379`).
async fn served(probe: &Probe, endpoints: &[String]) -> Result<Vec<CertificateDer<'static>>> {
    let mut certs = Vec::new();
    for (ordinal, endpoint) in endpoints.iter().enumerate() {
        let ip = endpoint.trim_end_matches(":2379");
        for port in [2379, 2380] {
            let addr = format!("{ip}:{port}");
            certs.push(
                probe
                    .server_certificate_for(&addr, &pod_host(ordinal))
                    .await?,
            );
        }
    }
    Ok(certs)
}

/// A client that writes `t-N` keys over TLS, a new connection for every
/// write (so every write is a new handshake), and keeps every failure.
struct TlsWriter {
    acked: Arc<Mutex<Vec<String>>>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsWriter {
    fn start(endpoints: &[String], options: etcd_client::TlsOptions) -> TlsWriter {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, f, s) = (acked.clone(), failures.clone(), stop.clone());
        let endpoints: Vec<String> = endpoints.iter().map(|e| format!("https://{e}")).collect();
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                let key = format!("t-{n:06}");
                let put = async {
                    let connect = etcd_client::ConnectOptions::new().with_tls(options.clone());
                    let mut client =
                        etcd_client::Client::connect(&endpoints, Some(connect)).await?;
                    client.put(key.clone(), "v", None).await
                };
                match tokio::time::timeout(Duration::from_secs(5), put).await {
                    Ok(Ok(_)) => a.lock().unwrap().push(key),
                    Ok(Err(e)) => f.lock().unwrap().push(format!("{key}: {e}")),
                    Err(_) => f.lock().unwrap().push(format!("{key}: no answer in 5 s")),
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        TlsWriter {
            acked,
            failures,
            stop,
            task,
        }
    }

    /// Stops writing: the acknowledged keys and the failures.
    async fn finish(self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let acked = self.acked.lock().unwrap().clone();
        let failures = self.failures.lock().unwrap().clone();
        (acked, failures)
    }
}

pub async fn a_tls_cluster_rotates_its_certificates_under_a_writer(
    plane: &ControlPlane,
) -> Result<()> {
    apply(
        plane,
        &format!(
            "apiVersion: raftkv.io/v1alpha1\nkind: RaftCluster\nmetadata:\n  name: {RC}\n\
             spec:\n  replicas: 3\n  image: raftkv:0.1.0\n  tls: {{}}\n  \
             storage:\n    whenDeleted: Delete\n"
        ),
    )
    .await?;
    wait_settled(plane, RC, 3, Duration::from_secs(300)).await?;
    // TLS cannot be turned off (nor on) under running members.
    let off = plane
        .kubectl(
            &[
                "patch",
                "rkc",
                RC,
                "-n",
                NS,
                "--type=json",
                "-p",
                r#"[{"op":"remove","path":"/spec/tls"}]"#,
            ],
            Duration::from_secs(60),
        )
        .await?
        .failed()
        .context("removing spec.tls")?;
    ensure!(
        off.stderr
            .contains("spec.tls can only be set when the RaftCluster is created"),
        "removing spec.tls was refused, but not by the validation rule: {}",
        off.stderr
    );

    // etcdctl, by the members' DNS names, with the Secret's client
    // certificate: works. Without a certificate, or in plaintext: refused.
    let dir = tempfile::tempdir()?;
    let client = client_files(plane, dir.path()).await?;
    let hosts = plane.hosts_file();
    let names: Vec<String> = (0..3).map(|o| format!("{}:2379", pod_host(o))).collect();
    let etcdctl = Etcdctl::new(&names)?
        .with_tls(&client)
        .with_hosts_file(&hosts);
    etcdctl.run(&["put", "greeting", "over tls"]).await?.ok()?;
    let got = etcdctl
        .run(&["get", "greeting", "--print-value-only"])
        .await?
        .ok()?
        .stdout;
    ensure!(got.trim() == "over tls", "etcdctl get printed {got:?}");
    let anonymous = Etcdctl::new(&names)?
        .with_trusted_ca(&client.ca)
        .with_hosts_file(&hosts);
    anonymous
        .run(&["put", "intruder", "x"])
        .await?
        .failed()
        .context("a put without a client certificate")?;
    let ips = member_endpoints(plane, RC).await?;
    Etcdctl::new(&ips)?
        .run(&["put", "intruder", "x"])
        .await?
        .failed()
        .context("a plaintext put")?;
    let stored = etcdctl
        .run(&["get", "intruder", "--print-value-only"])
        .await?
        .ok()?
        .stdout;
    ensure!(
        stored.trim().is_empty(),
        "an intruder's put is stored: {stored:?}"
    );

    // Every member serves the member Secret's certificate on both ports.
    let probe = Probe::from_files(&client)?;
    let issued = member_secret_cert(plane).await?;
    let before = served(&probe, &ips).await?;
    ensure!(
        before.iter().all(|c| *c == issued),
        "the members do not all serve the member Secret's certificate"
    );

    // Rotate while a client writes through new connections: the members
    // serve the new certificate within a volume refresh, no write fails.
    let options = client.options()?.domain_name(format!("{RC}.{NS}.svc"));
    let writer = TlsWriter::start(&ips, options);
    tokio::time::sleep(Duration::from_secs(3)).await;
    kubectl(
        plane,
        &[
            "annotate",
            "rkc",
            "-n",
            NS,
            RC,
            "raftkv.io/rotate-certificates=1",
            "--overwrite",
        ],
    )
    .await?;
    let asked = std::time::Instant::now();
    let renewed = until(
        Duration::from_secs(120),
        "every member serving a renewed certificate on both ports",
        || async {
            let now = member_secret_cert(plane).await?;
            if now == issued {
                bail!("the member Secret still holds the first certificate");
            }
            let served = served(&probe, &ips).await?;
            let stale = served.iter().filter(|c| **c != now).count();
            if stale > 0 {
                bail!(
                    "{stale} of {} ports serve another certificate",
                    served.len()
                );
            }
            Ok(Some(now))
        },
    )
    .await?;
    ensure!(renewed != issued);
    let took = asked.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (acked, failures) = writer.finish().await;
    println!(
        "tls: every port served the renewed certificate {took:.1?} after the annotation; \
         {} writes, {} failed",
        acked.len(),
        failures.len()
    );
    ensure!(
        failures.is_empty(),
        "{} of {} writes failed during the rotation: {:?}",
        failures.len(),
        failures.len() + acked.len(),
        failures
    );
    ensure!(
        acked.len() >= 20,
        "only {} writes in the rotation",
        acked.len()
    );
    let keys: BTreeSet<String> = etcdctl
        .run(&["get", "t-", "--prefix", "--keys-only"])
        .await?
        .ok()?
        .stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    ensure_none_lost(&acked, &keys)?;
    let seen = events(plane, RC).await?;
    ensure!(
        seen.matches("IssuedCertificates").count() >= 2,
        "events do not show the first issue and the rotation:\n{seen}"
    );
    let phase = jsonpath(plane, &format!("rkc/{RC}"), "{.status.phase}").await?;
    ensure!(phase == "Running", "phase after the rotation: {phase}");

    crate::maintenance::compacts_and_defragments_on_schedule(plane, RC, &etcdctl).await?;
    kubectl(plane, &["delete", "rkc", "-n", NS, RC, "--wait=true"]).await?;
    Ok(())
}
