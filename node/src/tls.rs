//! TLS on the client and peer ports, configured with etcd's flags.
//!
//! `--cert-file`/`--key-file` serve the client port over TLS, and with
//! `--client-cert-auth` every client must present a certificate that chains
//! to `--trusted-ca-file`; its common name then names the user when the call
//! carries no token, as in etcd. The `--peer-*` flags do the same for the
//! peer port, and a member dials the others with its peer certificate as its
//! client certificate, so with `--peer-client-cert-auth` nothing but a holder
//! of a certificate from the cluster's CA can speak Raft to a member.
//!
//! Certificates, keys and CAs are read again when their files change (size
//! or modification time), checked on each new connection: rotate them by
//! replacing the files, no restart. A pair that does not load (a key that
//! does not match its certificate while the two files are being replaced one
//! by one) keeps the previous pair in use until it does.
//!
//! rustls with the `ring` provider: the pure-Rust stack tonic already uses,
//! and no second C library to build.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::SystemTime;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A handshake that takes longer than this is dropped (a client that opens a
/// connection and sends nothing must not hold a task for ever).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One port's TLS files (etcd's `--cert-file`, `--key-file`,
/// `--trusted-ca-file`, `--client-cert-auth`, or their `--peer-` forms).
#[derive(Clone, Debug, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA client certificates must chain to (and, on the peer port, the
    /// CA other members' certificates must chain to).
    pub trusted_ca: Option<PathBuf>,
    /// Refuse clients without a certificate from `trusted_ca`.
    pub client_cert_auth: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What tells that files changed: each one's modification time and size
/// (`None` while it is missing).
type Stamps = Vec<Option<(SystemTime, u64)>>;

/// A value built from files, built again when one of them changes.
struct Watched<T> {
    what: &'static str,
    paths: Vec<PathBuf>,
    build: fn(&[PathBuf]) -> anyhow::Result<T>,
    state: Mutex<(Stamps, Arc<T>)>,
}

fn stamps(paths: &[PathBuf]) -> Stamps {
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

impl<T> Watched<T> {
    /// Build once now: a file that does not load at start is an error.
    fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        build: fn(&[PathBuf]) -> anyhow::Result<T>,
    ) -> anyhow::Result<Self> {
        let seen = stamps(&paths);
        let value = build(&paths)?;
        Ok(Watched {
            what,
            paths,
            build,
            state: Mutex::new((seen, Arc::new(value))),
        })
    }

    /// The value for the files as they are now.
    fn current(&self) -> Arc<T> {
        let seen = stamps(&self.paths);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if seen != state.0 {
            match (self.build)(&self.paths) {
                Ok(value) => {
                    tracing::info!(files = ?self.paths, "reloaded the {}", self.what);
                    *state = (seen, Arc::new(value));
                }
                // Tried again on the next connection.
                Err(e) => tracing::warn!(
                    "cannot reload the {} (keeping the previous one): {e:#}",
                    self.what
                ),
            }
        }
        state.1.clone()
    }
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read certificates from {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
    Ok(certs)
}

/// A certificate chain and its key (`paths`: cert, key), checked to match.
fn load_pair(paths: &[PathBuf]) -> anyhow::Result<CertifiedKey> {
    let certs = read_certs(&paths[0])?;
    let key = PrivateKeyDer::from_pem_file(&paths[1])
        .with_context(|| format!("cannot read a private key from {}", paths[1].display()))?;
    CertifiedKey::from_der(certs, key, &provider()).with_context(|| {
        format!(
            "the key in {} does not go with the certificate in {}",
            paths[1].display(),
            paths[0].display()
        )
    })
}

/// A verifier of client certificates against the CA in `paths[0]`.
fn load_client_verifier(paths: &[PathBuf]) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(&paths[0])? {
        roots
            .add(cert)
            .with_context(|| format!("a certificate in {} is not a CA", paths[0].display()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .with_context(|| format!("cannot verify clients with {}", paths[0].display()))
}

/// The server's certificate, as the files hold it at each handshake.
#[derive(Debug)]
struct ServerCert(Watched<CertifiedKey>);

impl std::fmt::Debug for Watched<CertifiedKey> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} from {:?}", self.what, self.paths)
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

/// Client certificates checked against the CA as its file holds it now.
struct ClientCa(Watched<Arc<dyn ClientCertVerifier>>);

impl std::fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client CA from {:?}", self.0.paths)
    }
}

impl ClientCertVerifier for ClientCa {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; the CA may change under us.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().supported_verify_schemes()
    }
}

/// What a port speaks, as offered to clients in the TLS handshake (ALPN).
#[derive(Clone, Copy, Debug)]
pub enum Protocols {
    /// gRPC only: HTTP/2 (the peer port).
    Http2,
    /// gRPC and plain HTTP requests (the client port, as etcd's).
    Http2AndHttp1,
}

/// The acceptor for one port. Fails if the files do not load now.
pub fn acceptor(files: &TlsFiles, protocols: Protocols) -> anyhow::Result<TlsAcceptor> {
    let cert = Watched::new(
        "TLS certificate",
        vec![files.cert.clone(), files.key.clone()],
        load_pair,
    )?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match (&files.trusted_ca, files.client_cert_auth) {
        (Some(ca), true) => {
            let verifier = Watched::new("trusted CA", vec![ca.clone()], load_client_verifier)?;
            builder.with_client_cert_verifier(Arc::new(ClientCa(verifier)))
        }
        (None, true) => anyhow::bail!("client certificate authentication needs a trusted CA file"),
        (_, false) => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(ServerCert(cert)));
    config.alpn_protocols = match protocols {
        Protocols::Http2 => vec![b"h2".to_vec()],
        Protocols::Http2AndHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The TLS connections a listener accepts: each handshake runs on its own
/// task, so a slow or silent client delays nobody else; a failed one is
/// logged (at debug: port scanners are common) and dropped.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> impl tokio_stream::Stream<Item = std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            // The server dropping its end (shutdown) closes the listener too.
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, from) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%from, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%from, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The client side of the peer port: what a member presents and trusts when
/// it dials another member. Read again when the files change (checked at
/// most once a second; existing connections keep their handshake).
pub struct PeerClientTls {
    files: TlsFiles,
    /// When the files were last looked at, and how they were.
    last: Mutex<(std::time::Instant, Stamps)>,
}

impl PeerClientTls {
    pub fn new(files: TlsFiles) -> anyhow::Result<Self> {
        let paths = peer_paths(&files);
        let tls = PeerClientTls {
            last: Mutex::new((std::time::Instant::now(), stamps(&paths))),
            files,
        };
        tls.config()?;
        Ok(tls)
    }

    /// tonic's TLS settings for a channel to another member.
    pub fn config(&self) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
        let read =
            |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        let mut config = tonic::transport::ClientTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(read(&self.files.cert)?, read(&self.files.key)?),
        );
        if let Some(ca) = &self.files.trusted_ca {
            config = config.ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
        }
        Ok(config)
    }

    /// Whether the files changed since the last call that said so (at most
    /// one look a second).
    pub fn changed(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.0.elapsed() < Duration::from_secs(1) {
            return false;
        }
        let now = stamps(&peer_paths(&self.files));
        last.0 = std::time::Instant::now();
        if now == last.1 {
            return false;
        }
        last.1 = now;
        true
    }
}

fn peer_paths(files: &TlsFiles) -> Vec<PathBuf> {
    let mut paths = vec![files.cert.clone(), files.key.clone()];
    paths.extend(files.trusted_ca.clone());
    paths
}

/// The common name of a client certificate (DER), if it has one.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}
