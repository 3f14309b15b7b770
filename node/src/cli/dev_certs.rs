//! Certificates for `raftkv dev --tls`: a throwaway CA, one certificate the
//! local members share for their client and peer ports (valid for 127.0.0.1
//! and localhost, as server and as client), and a client certificate whose
//! common name is `root`, for etcdctl and the raftkv CLI.
//!
//! They are made once, in `<data-dir>/tls`, and kept for the next run, so a
//! cluster restarted with its data trusts the same CA. They are for a laptop,
//! not for production: the CA's key sits next to them.

use std::path::Path;
use std::path::PathBuf;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The files `raftkv dev --tls` hands to members and prints for clients.
pub struct DevCerts {
    pub ca: PathBuf,
    pub member_cert: PathBuf,
    pub member_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl DevCerts {
    fn in_dir(dir: &Path) -> Self {
        DevCerts {
            ca: dir.join("ca.pem"),
            member_cert: dir.join("member.pem"),
            member_key: dir.join("member-key.pem"),
            client_cert: dir.join("root.pem"),
            client_key: dir.join("root-key.pem"),
        }
    }

    /// The certificates in `dir`, made now unless a previous run made them.
    pub fn ensure(dir: &Path) -> anyhow::Result<Self> {
        let certs = DevCerts::in_dir(dir);
        if [&certs.ca, &certs.member_cert, &certs.member_key]
            .into_iter()
            .chain([&certs.client_cert, &certs.client_key])
            .all(|p| p.exists())
        {
            return Ok(certs);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        make(&certs).context("making the dev certificates")?;
        Ok(certs)
    }
}

fn make(certs: &DevCerts) -> anyhow::Result<()> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "raftkv dev CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut member = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])?;
    member
        .distinguished_name
        .push(DnType::CommonName, "raftkv dev member");
    member.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let member_key = KeyPair::generate()?;
    let member_cert = member.signed_by(&member_key, &issuer)?;

    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client.distinguished_name.push(DnType::CommonName, "root");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate()?;
    let client_cert = client.signed_by(&client_key, &issuer)?;

    write(&certs.ca, &ca_cert.pem())?;
    write(&certs.member_cert, &member_cert.pem())?;
    write_key(&certs.member_key, &member_key.serialize_pem())?;
    write(&certs.client_cert, &client_cert.pem())?;
    write_key(&certs.client_key, &client_key.serialize_pem())?;
    Ok(())
}

fn write(path: &Path, pem: &str) -> anyhow::Result<()> {
    std::fs::write(path, pem).with_context(|| format!("cannot write {}", path.display()))
}

/// A private key, readable by its owner only.
fn write_key(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    write(path, pem)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))
}
