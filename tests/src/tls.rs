//! The harness's TLS mode ([`crate::ClusterOptions::tls`]): a cluster whose
//! client and peer ports speak only TLS and want a client certificate.
//!
//! A TLS cluster makes its own CA in `<cluster root>/tls/` and gives every
//! member two certificates from it, one for its client port and one for its
//! peer port (which it also presents when it dials the other members), with
//! etcd's flags: `--cert-file --key-file --trusted-ca-file --client-cert-auth`
//! and their `--peer-` forms. The harness's own clients (etcd-client through
//! [`crate::grpc`], etcdctl) then present a client certificate for `root`.
//! The metrics port stays plain HTTP, so readiness is polled as usual.
//!
//! Certificates are re-issued from the same CA and swapped under a running
//! member with [`ClusterTls::issue_member`] (files replaced by rename): the
//! node re-reads changed files at its next handshake, so rotation needs no
//! restart.

use crate::certs::{Ca, Issued};
use anyhow::{Context, Result};
use etcd_client::{Certificate, Identity, TlsOptions};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The files a client presents and trusts: etcdctl's `--cacert --cert --key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA the server's certificate must chain to.
    pub ca: PathBuf,
    /// The client's certificate and key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientTls {
    /// etcd-client's TLS settings, from the files as they are now.
    pub fn options(&self) -> Result<TlsOptions> {
        Ok(TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?)))
    }

    /// etcdctl's flags for these files.
    pub fn etcdctl_flags(&self) -> Vec<String> {
        vec![
            format!("--cacert={}", self.ca.display()),
            format!("--cert={}", self.cert.display()),
            format!("--key={}", self.key.display()),
        ]
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Where one member's certificates and keys are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberTlsFiles {
    /// Served on the client port.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Served on the peer port, and presented when dialing other members.
    pub peer_cert: PathBuf,
    pub peer_key: PathBuf,
}

/// The certificates a member's files hold now (as last issued by the harness).
pub struct MemberCerts {
    pub client: Issued,
    pub peer: Issued,
}

/// A TLS cluster's CA, its files and the certificates issued to its members.
pub struct ClusterTls {
    dir: PathBuf,
    ca: Ca,
    root: ClientTls,
    /// Member name -> the certificates its files hold.
    issued: BTreeMap<String, MemberCerts>,
}

impl ClusterTls {
    /// A new CA in `dir` (created), with a client certificate for `root`.
    pub(crate) fn create(dir: PathBuf) -> Result<ClusterTls> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = Ca::new("raftkv-tests cluster CA")?;
        let mut tls = ClusterTls {
            root: ClientTls {
                ca: dir.join("ca.pem"),
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            dir,
            ca,
            issued: BTreeMap::new(),
        };
        tls.ca.write_cert(&tls.ca_file())?;
        tls.root = tls.issue_client("root")?;
        Ok(tls)
    }

    /// `<cluster root>/tls`, where every file below lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cluster's CA (e.g. to issue more certificates from it).
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The CA certificate every member trusts on both ports.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The client files for `root` the harness's own clients use.
    pub fn root_client(&self) -> &ClientTls {
        &self.root
    }

    /// A client certificate from the cluster's CA for `common_name`, written
    /// to `<common_name>.pem` and `<common_name>-key.pem`.
    pub fn issue_client(&self, common_name: &str) -> Result<ClientTls> {
        let files = ClientTls {
            ca: self.ca_file(),
            cert: self.dir.join(format!("{common_name}.pem")),
            key: self.dir.join(format!("{common_name}-key.pem")),
        };
        self.ca
            .issue_client(common_name)?
            .write(&files.cert, &files.key)?;
        Ok(files)
    }

    /// Where member `name`'s files are (whether or not issued yet).
    pub fn member_files(&self, name: &str) -> MemberTlsFiles {
        let file = |what: &str| self.dir.join(format!("{name}-{what}.pem"));
        MemberTlsFiles {
            client_cert: file("client"),
            client_key: file("client-key"),
            peer_cert: file("peer"),
            peer_key: file("peer-key"),
        }
    }

    /// The certificates member `name`'s files hold now.
    pub fn member_certs(&self, name: &str) -> Option<&MemberCerts> {
        self.issued.get(name)
    }

    /// Issue member `name` (reachable at `host`) a new client-port and a new
    /// peer-port certificate from the cluster's CA and replace its files with
    /// them (each by rename). Used before a member starts and, on a running
    /// member, to rotate its certificates.
    pub fn issue_member(&mut self, name: &str, host: IpAddr) -> Result<&MemberCerts> {
        let files = self.member_files(name);
        let client = self.ca.issue_member(name, host)?;
        let peer = self.ca.issue_member(name, host)?;
        client.write(&files.client_cert, &files.client_key)?;
        peer.write(&files.peer_cert, &files.peer_key)?;
        self.issued
            .insert(name.to_string(), MemberCerts { client, peer });
        Ok(&self.issued[name])
    }

    /// The `raftkv serve` TLS flags of member `name`: both ports over TLS,
    /// both requiring a client certificate from the cluster's CA.
    pub(crate) fn serve_args(&self, name: &str) -> Vec<String> {
        let files = self.member_files(name);
        let ca = self.ca_file();
        let path = |p: &Path| p.to_string_lossy().into_owned();
        vec![
            "--cert-file".to_string(),
            path(&files.client_cert),
            "--key-file".to_string(),
            path(&files.client_key),
            "--trusted-ca-file".to_string(),
            path(&ca),
            "--client-cert-auth".to_string(),
            "--peer-cert-file".to_string(),
            path(&files.peer_cert),
            "--peer-key-file".to_string(),
            path(&files.peer_key),
            "--peer-trusted-ca-file".to_string(),
            path(&ca),
            "--peer-client-cert-auth".to_string(),
        ]
    }
}
