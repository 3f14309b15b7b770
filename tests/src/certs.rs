//! Certificates made by the test that uses them: a CA, member certificates
//! and client certificates, written as PEM files.
//!
//! TLS tests need certificates a test controls: a CA the members trust, a
//! second CA that nobody trusts (a stranger's certificate must be refused
//! even when its common name is right), and fresh certificates from the same
//! CA to rotate to while a cluster serves. Making them per test in the test's
//! own dir means no fixture expires and no private key is checked in.
//!
//! Every certificate gets a random serial number, so a handshake can tell a
//! re-issued certificate from the one it replaces. Files are written under a
//! temporary name beside their target and renamed over it: a member re-reads
//! its files when they change and must never see a half-written one.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A self-signed certificate authority that issues member and client
/// certificates.
pub struct Ca {
    name: String,
    cert: Certificate,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A new CA (its own key) whose common name is `name`.
    pub fn new(name: &str) -> Result<Ca> {
        let mut params = params_named(name, Vec::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().context("generating a CA key")?;
        let cert = params
            .self_signed(&key)
            .with_context(|| format!("self-signing CA {name:?}"))?;
        Ok(Ca {
            name: name.to_string(),
            cert,
            issuer: Issuer::new(params, key),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// Write the CA certificate (what `--trusted-ca-file` and `--cacert` take).
    pub fn write_cert(&self, path: &Path) -> Result<()> {
        write_atomically(path, self.cert_pem().as_bytes(), 0o644)
    }

    /// A member certificate: SANs 127.0.0.1 and localhost (and `host` if it is
    /// another address), usable as server (client and peer port) and as client
    /// (dialing other members with `--peer-client-cert-auth`).
    pub fn issue_member(&self, common_name: &str, host: IpAddr) -> Result<Issued> {
        let mut sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        if !host.is_loopback() {
            sans.push(host.to_string());
        }
        let mut params = params_named(common_name, sans)?;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.issue(params, common_name)
    }

    /// A client certificate whose common name is `common_name` (with
    /// `--client-cert-auth` the node takes it as the user of a call without
    /// a token, as etcd does).
    pub fn issue_client(&self, common_name: &str) -> Result<Issued> {
        let mut params = params_named(common_name, Vec::new())?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, common_name)
    }

    fn issue(&self, params: CertificateParams, common_name: &str) -> Result<Issued> {
        let key = KeyPair::generate().context("generating a key")?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("CA {:?} signing {common_name:?}", self.name))?;
        Ok(Issued {
            common_name: common_name.to_string(),
            serial: params.serial_number.clone().expect("params_named sets one"),
            cert,
            key,
        })
    }
}

/// Parameters with `common_name`, `subject_alt_names` (IP addresses or DNS
/// names), a random serial, the digital-signature key usage, and rcgen's
/// default validity (1975 to 4096: nothing here expires during a test).
fn params_named(common_name: &str, subject_alt_names: Vec<String>) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(subject_alt_names)
        .with_context(|| format!("certificate parameters for {common_name:?}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.serial_number = Some(random_serial());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// 16 random bytes, positive and without a leading zero byte (so the DER
/// encoding holds exactly these bytes).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// A certificate and its private key, as a CA issued them.
pub struct Issued {
    pub common_name: String,
    /// The serial number, e.g. to tell this certificate from the one it replaced.
    pub serial: SerialNumber,
    cert: Certificate,
    key: KeyPair,
}

impl Issued {
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    /// Write the certificate to `cert` and the key to `key` (readable by its
    /// owner only), each by rename: the key first, then the certificate. A
    /// reader between the two renames sees a certificate and a key that do
    /// not match; the node keeps its previous pair until they do.
    pub fn write(&self, cert: &Path, key: &Path) -> Result<()> {
        write_atomically(key, self.key_pem().as_bytes(), 0o600)?;
        write_atomically(cert, self.cert_pem().as_bytes(), 0o644)
    }
}

/// Replace `path` with `contents` by writing `<path>.tmp` (mode `mode`),
/// syncing it, and renaming it over `path`.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(file);
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
