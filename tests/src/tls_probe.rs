//! Raw TLS handshakes against a member's client or peer port: which
//! certificate the port serves right now, and whether it answers an HTTP/2
//! greeting (how every gRPC call starts) from a given client.
//!
//! The TLS tests need what no gRPC client shows: the certificate a port
//! presents after a rotation, and a refusal on the peer port, which no etcd
//! client speaks to. A [`Probe`] is tokio-rustls and nothing else. It trusts
//! the CA it is given, so a probe that cannot trust the server's certificate
//! is an error, never mistaken for the server refusing the client.

use crate::tls::ClientTls;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A probe gives up after this: a port that neither answers nor refuses is
/// neither, and the test should say so.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The client side of HTTP/2's connection preface, then an empty SETTINGS frame.
const H2_GREETING: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
/// HTTP/2's frame type of SETTINGS, the first frame a server sends.
const H2_SETTINGS: u8 = 0x4;

/// What a port did with an HTTP/2 greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Greeting {
    /// It sent HTTP/2 SETTINGS back: it would serve this client's gRPC calls.
    Answered,
    /// It failed the TLS handshake, closed or reset the connection, or sent
    /// back something that is not HTTP/2; the reason says which.
    Refused(String),
}

impl Greeting {
    pub fn is_answered(&self) -> bool {
        *self == Greeting::Answered
    }
}

/// A TLS client with fixed credentials.
#[derive(Clone)]
pub struct Probe {
    config: Arc<ClientConfig>,
}

impl Probe {
    /// Trust `ca` only; present `identity` (a chain and its key) if given.
    /// Offers ALPN `h2`, as gRPC clients do.
    pub fn new(
        ca: CertificateDer<'static>,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<Probe> {
        let mut roots = RootCertStore::empty();
        roots.add(ca).context("adding the probe's CA")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .context("the probe's client certificate")?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Probe {
            config: Arc::new(config),
        })
    }

    /// Trust `tls.ca`, present `tls.cert` and `tls.key` (PEM files, read now).
    pub fn from_files(tls: &ClientTls) -> Result<Probe> {
        let key = PrivateKeyDer::from_pem_file(&tls.key)
            .with_context(|| format!("reading a private key from {}", tls.key.display()))?;
        Probe::new(read_cert(&tls.ca)?, Some((read_certs(&tls.cert)?, key)))
    }

    /// Trust the CA in `ca` (PEM), present no client certificate.
    pub fn without_client_cert(ca: &Path) -> Result<Probe> {
        Probe::new(read_cert(ca)?, None)
    }

    /// Handshake with `addr` (`HOST:PORT`) and return the certificate it
    /// served (the end of its chain). In TLS 1.3 the client finishes its
    /// handshake before the server has judged the client's certificate, so
    /// this sees the server's certificate even if the server then refuses.
    pub async fn server_certificate(&self, addr: &str) -> Result<CertificateDer<'static>> {
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        self.server_certificate_for(addr, host).await
    }

    /// [`Probe::server_certificate`] of `addr`, checked as the certificate of
    /// `name` (a server whose name does not resolve here, dialled by address).
    pub async fn server_certificate_for(
        &self,
        addr: &str,
        name: &str,
    ) -> Result<CertificateDer<'static>> {
        let stream = tokio::time::timeout(PROBE_TIMEOUT, self.handshake(addr, name))
            .await
            .with_context(|| format!("TLS handshake with {addr} took over {PROBE_TIMEOUT:?}"))?
            .with_context(|| format!("TLS handshake with {addr}"))?;
        let (_, connection) = stream.get_ref();
        let chain = connection
            .peer_certificates()
            .with_context(|| format!("{addr} sent no certificate"))?;
        let first = chain
            .first()
            .with_context(|| format!("{addr} sent an empty chain"))?;
        Ok(first.clone().into_owned())
    }

    /// Handshake with `addr` and greet it in HTTP/2. An error means the probe
    /// learned nothing: it could not connect, did not trust the server's
    /// certificate, or got neither an answer nor a refusal in time.
    pub async fn greet(&self, addr: &str) -> Result<Greeting> {
        tokio::time::timeout(PROBE_TIMEOUT, self.greet_inner(addr))
            .await
            .with_context(|| {
                format!("{addr} neither answered nor refused within {PROBE_TIMEOUT:?}")
            })?
    }

    async fn greet_inner(&self, addr: &str) -> Result<Greeting> {
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        let stream = match self.handshake(addr, host).await {
            Ok(stream) => stream,
            Err(err) => return refusal(addr, "TLS handshake", err),
        };
        greet_over(addr, stream).await
    }

    async fn handshake(
        &self,
        addr: &str,
        host: &str,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let tcp = TcpStream::connect(addr).await?;
        TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
    }
}

/// Greet `addr` in HTTP/2 without TLS, as a plaintext gRPC client would.
pub async fn greet_plaintext(addr: &str) -> Result<Greeting> {
    tokio::time::timeout(PROBE_TIMEOUT, async {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        greet_over(addr, tcp).await
    })
    .await
    .with_context(|| format!("{addr} neither answered nor refused within {PROBE_TIMEOUT:?}"))?
}

/// Send the HTTP/2 greeting on `stream` and read the first frame header back.
async fn greet_over<S: AsyncRead + AsyncWrite + Unpin>(
    addr: &str,
    mut stream: S,
) -> Result<Greeting> {
    let sent = async {
        stream.write_all(H2_GREETING).await?;
        stream.flush().await
    };
    if let Err(err) = sent.await {
        return refusal(addr, "sending the HTTP/2 greeting", err);
    }
    let mut header = [0u8; 9];
    match stream.read_exact(&mut header).await {
        Ok(_) if header[3] == H2_SETTINGS => Ok(Greeting::Answered),
        Ok(_) => Ok(Greeting::Refused(format!(
            "answered with bytes that are not an HTTP/2 SETTINGS frame: {header:02x?}"
        ))),
        Err(err) => refusal(addr, "reading the answer", err),
    }
}

/// A failed step as a refusal by the server, unless the failure is the
/// probe's own: not trusting the server's certificate is not a refusal.
fn refusal(addr: &str, step: &str, err: std::io::Error) -> Result<Greeting> {
    let local = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|tls| {
            matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        });
    if local {
        bail!("{step} with {addr}: the probe does not trust the server: {err}");
    }
    Ok(Greeting::Refused(format!("{step}: {err}")))
}

/// The certificates in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", path.display());
    }
    Ok(certs)
}

/// The first certificate in a PEM file.
pub fn read_cert(path: &Path) -> Result<CertificateDer<'static>> {
    Ok(read_certs(path)?.remove(0))
}
