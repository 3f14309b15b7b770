//! The certificates of a RaftCluster with `spec.tls`: what is issued, and
//! when it is issued again. Pure: the controller reads and writes the Secrets
//! (`controller/certificates.rs`).
//!
//! The operator is each cluster's certificate authority. It makes one CA per
//! cluster (Secret `NAME-ca`, valid ten years) and issues from it:
//!
//! - one member certificate all members share (Secret `NAME-member-tls`),
//!   for server and client authentication: a member serves it on its client
//!   and peer ports and presents it when it dials the other members. It names
//!   every pod under the headless Service (a wildcard on that Service's name,
//!   which only this cluster's pods have) and the client Service. One shared
//!   certificate because every pod of a StatefulSet mounts the same Secrets;
//!   a certificate per pod would need a Secret per pod that the pod template
//!   cannot name.
//! - one client certificate with common name `root` (Secret `NAME-client-tls`):
//!   what etcdctl, applications and the operator itself present. With auth
//!   enabled the common name is the user, as in etcd, so its holder is root.
//!   Other identities: sign a certificate for the user's name with the CA.
//!
//! Renewal ([`renewal`]) is decided from what the two leaf Secrets record: a
//! new pair is issued from the same CA when a third of its validity is left,
//! when the user asks (a new value of the annotation
//! `raftkv.io/rotate-certificates` on the RaftCluster), or when a Secret is
//! missing, unreadable or from another CA. Members re-read their files at
//! their next handshake (`node/src/tls.rs`) and the old and new certificates
//! chain to the same CA, so a renewal restarts nothing and breaks no
//! connection.
//!
//! Not done: renewing the CA itself (ten years; deleting `NAME-ca` makes a
//! new one, and members reject each other until every pod has the new files),
//! and cert-manager as the issuer.

use crate::naming::ClusterNames;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// On the RaftCluster: a new value asks for new member and client
/// certificates now.
pub const ROTATE_ANNOTATION: &str = "raftkv.io/rotate-certificates";
/// On a leaf Secret: when its certificate expires (RFC 3339).
pub const NOT_AFTER_ANNOTATION: &str = "raftkv.io/not-after";
/// On a leaf Secret: the value of [`ROTATE_ANNOTATION`] it was issued for.
pub const ISSUED_FOR_ANNOTATION: &str = "raftkv.io/issued-for-rotation";
/// The common name of the client certificate: etcd's root user.
pub const CLIENT_COMMON_NAME: &str = "root";
/// The cluster DNS domain the member certificate names (Kubernetes' default).
pub const CLUSTER_DOMAIN: &str = "cluster.local";

const CA_VALIDITY: SignedDuration = SignedDuration::from_hours(10 * 365 * 24);
/// Issued certificates start this far in the past: a member whose clock is a
/// little behind the operator's must accept them at once.
const BACKDATE: SignedDuration = SignedDuration::from_hours(1);

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("issuing a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("certificate validity: {0}")]
    Time(String),
}

/// A certificate and its private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertAndKey {
    // Never print a private key into a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAndKey").finish_non_exhaustive()
    }
}

/// The member and client certificates of one issuance.
#[derive(Debug, Clone)]
pub struct Leaves {
    pub member: CertAndKey,
    pub client: CertAndKey,
    pub not_after: Timestamp,
}

fn offset(t: Timestamp) -> Result<time::OffsetDateTime, CertError> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second())
        .map_err(|e| CertError::Time(e.to_string()))
}

fn validity(
    params: &mut CertificateParams,
    from: Timestamp,
    to: Timestamp,
) -> Result<(), CertError> {
    params.not_before = offset(from)?;
    params.not_after = offset(to)?;
    Ok(())
}

fn plus(t: Timestamp, d: SignedDuration) -> Result<Timestamp, CertError> {
    t.checked_add(d).map_err(|e| CertError::Time(e.to_string()))
}

fn minus(t: Timestamp, d: SignedDuration) -> Result<Timestamp, CertError> {
    t.checked_sub(d).map_err(|e| CertError::Time(e.to_string()))
}

/// A new CA for the cluster `names`.
pub fn new_ca(names: &ClusterNames, now: Timestamp) -> Result<CertAndKey, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("raftkv CA {}/{}", names.namespace, names.cluster),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, minus(now, BACKDATE)?, plus(now, CA_VALIDITY)?)?;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The certificates `ca` signs for the cluster `names`, valid `days` from now.
pub fn issue_leaves(
    ca: &CertAndKey,
    names: &ClusterNames,
    now: Timestamp,
    days: u32,
) -> Result<Leaves, CertError> {
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, KeyPair::from_pem(&ca.key_pem)?)?;
    let not_after = plus(now, SignedDuration::from_hours(24 * i64::from(days)))?;
    let not_before = minus(now, BACKDATE)?;

    let mut member = CertificateParams::new(names.member_dns_names(CLUSTER_DOMAIN))?;
    member.distinguished_name.push(
        DnType::CommonName,
        format!("{}.{}", names.peer_service(), names.namespace),
    );
    member.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    member.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut member, not_before, not_after)?;
    let member_key = KeyPair::generate()?;
    let member_cert = member.signed_by(&member_key, &issuer)?;

    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client
        .distinguished_name
        .push(DnType::CommonName, CLIENT_COMMON_NAME);
    client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut client, not_before, not_after)?;
    let client_key = KeyPair::generate()?;
    let client_cert = client.signed_by(&client_key, &issuer)?;

    Ok(Leaves {
        member: CertAndKey {
            cert_pem: member_cert.pem(),
            key_pem: member_key.serialize_pem(),
        },
        client: CertAndKey {
            cert_pem: client_cert.pem(),
            key_pem: client_key.serialize_pem(),
        },
        not_after,
    })
}

/// What a leaf Secret records, as far as renewal cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRecord {
    /// The CA certificate stored beside the leaf (`ca.crt`).
    pub ca_pem: String,
    /// From [`NOT_AFTER_ANNOTATION`]; `None` when missing or unreadable.
    pub not_after: Option<Timestamp>,
    /// From [`ISSUED_FOR_ANNOTATION`].
    pub issued_for: String,
}

/// Why new leaves are issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueReason {
    /// A leaf Secret does not exist or lacks a certificate or key.
    Missing,
    /// A leaf Secret holds a certificate of another CA.
    OtherCa,
    /// The user asked: [`ROTATE_ANNOTATION`] changed.
    Requested,
    /// A third of the validity or less is left (or the expiry is unknown).
    Due,
}

impl std::fmt::Display for IssueReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IssueReason::Missing => "a certificate Secret is missing or incomplete",
            IssueReason::OtherCa => "a certificate Secret holds another CA's certificate",
            IssueReason::Requested => "raftkv.io/rotate-certificates changed",
            IssueReason::Due => "a third of the certificates' validity is left",
        })
    }
}

/// Keep the leaves until `due`, or issue new ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    Keep { due: Timestamp },
    Issue(IssueReason),
}

/// Whether the leaves the Secrets record (`None`: a Secret missing or
/// incomplete) must be issued again from the CA `ca_pem`, given the rotation
/// the user asks for and the validity in days.
pub fn renewal(
    leaves: &[Option<LeafRecord>],
    ca_pem: &str,
    requested: &str,
    days: u32,
    now: Timestamp,
) -> Renewal {
    let mut due: Option<Timestamp> = None;
    for leaf in leaves {
        let Some(leaf) = leaf else {
            return Renewal::Issue(IssueReason::Missing);
        };
        if leaf.ca_pem.trim() != ca_pem.trim() {
            return Renewal::Issue(IssueReason::OtherCa);
        }
        if leaf.issued_for != requested {
            return Renewal::Issue(IssueReason::Requested);
        }
        let third = SignedDuration::from_hours(24 * i64::from(days)) / 3;
        match leaf.not_after.and_then(|t| t.checked_sub(third).ok()) {
            Some(at) if at > now => due = Some(due.map_or(at, |d| d.min(at))),
            _ => return Renewal::Issue(IssueReason::Due),
        }
    }
    match due {
        Some(due) => Renewal::Keep { due },
        None => Renewal::Issue(IssueReason::Missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::client::danger::ServerCertVerifier;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use tokio_rustls::rustls::server::WebPkiClientVerifier;

    fn names() -> ClusterNames {
        ClusterNames::new("demo", "prod")
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn roots(ca: &CertAndKey) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der(&ca.cert_pem)).unwrap();
        Arc::new(roots)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// Whether `leaf` is a server certificate for `host` chaining to `ca`.
    fn serves(ca: &CertAndKey, leaf: &CertAndKey, host: &str) -> bool {
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca), provider())
                .build()
                .unwrap();
        verifier
            .verify_server_cert(
                &der(&leaf.cert_pem),
                &[],
                &ServerName::try_from(host.to_string()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .is_ok()
    }

    /// Whether `leaf` is a client certificate chaining to `ca`.
    fn authenticates(ca: &CertAndKey, leaf: &CertAndKey) -> bool {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
            .build()
            .unwrap();
        verifier
            .verify_client_cert(&der(&leaf.cert_pem), &[], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn the_member_certificate_names_every_pod_and_the_client_service() {
        let now = Timestamp::now();
        let ca = new_ca(&names(), now).unwrap();
        let leaves = issue_leaves(&ca, &names(), now, 90).unwrap();
        for host in [
            "demo-0.demo-peer.prod.svc",
            "demo-7.demo-peer.prod.svc.cluster.local",
            "demo.prod.svc",
            "demo",
            "localhost",
        ] {
            assert!(serves(&ca, &leaves.member, host), "{host}");
        }
        // Another cluster's pods, and another namespace's, are not named.
        for host in ["other-0.other-peer.prod.svc", "demo-0.demo-peer.dev.svc"] {
            assert!(!serves(&ca, &leaves.member, host), "{host}");
        }
        // Members dial each other with it; clients present theirs.
        assert!(authenticates(&ca, &leaves.member));
        assert!(authenticates(&ca, &leaves.client));
        assert!(!serves(&ca, &leaves.client, "demo.prod.svc"));
    }

    #[test]
    fn leaves_issued_later_from_the_stored_ca_chain_to_it_and_another_ca_refuses_them() {
        let now = Timestamp::now();
        let ca = new_ca(&names(), now).unwrap();
        // The CA as read back from its Secret, much later.
        let stored = CertAndKey {
            cert_pem: ca.cert_pem.clone(),
            key_pem: ca.key_pem.clone(),
        };
        let later = issue_leaves(&stored, &names(), now, 90).unwrap();
        assert!(serves(&ca, &later.member, "demo-1.demo-peer.prod.svc"));
        assert!(authenticates(&ca, &later.client));
        let other = new_ca(&names(), now).unwrap();
        assert!(!serves(&other, &later.member, "demo-1.demo-peer.prod.svc"));
        assert!(!authenticates(&other, &later.client));
        assert_eq!(
            later.not_after,
            now.checked_add(SignedDuration::from_hours(90 * 24))
                .unwrap()
        );
    }

    fn record(ca: &str, not_after: Timestamp, issued_for: &str) -> Option<LeafRecord> {
        Some(LeafRecord {
            ca_pem: ca.to_string(),
            not_after: Some(not_after),
            issued_for: issued_for.to_string(),
        })
    }

    fn days(n: i64) -> SignedDuration {
        SignedDuration::from_hours(24 * n)
    }

    #[test]
    fn leaves_are_renewed_when_a_third_of_their_validity_is_left() {
        let now = Timestamp::now();
        let expires = now.checked_add(days(31)).unwrap();
        let leaves = [record("CA", expires, ""), record("CA", expires, "")];
        assert_eq!(
            renewal(&leaves, "CA", "", 90, now),
            Renewal::Keep {
                due: expires.checked_sub(days(30)).unwrap()
            }
        );
        let later = now.checked_add(days(1)).unwrap();
        assert_eq!(
            renewal(&leaves, "CA", "", 90, later),
            Renewal::Issue(IssueReason::Due)
        );
    }

    #[test]
    fn leaves_are_issued_when_missing_from_another_ca_or_asked_for() {
        let now = Timestamp::now();
        let fine = record("CA", now.checked_add(days(80)).unwrap(), "1");
        assert_eq!(
            renewal(&[fine.clone(), None], "CA", "1", 90, now),
            Renewal::Issue(IssueReason::Missing)
        );
        assert_eq!(
            renewal(&[fine.clone(), fine.clone()], "NEW CA", "1", 90, now),
            Renewal::Issue(IssueReason::OtherCa)
        );
        assert_eq!(
            renewal(&[fine.clone(), fine.clone()], "CA", "2", 90, now),
            Renewal::Issue(IssueReason::Requested)
        );
        let unknown_expiry = Some(LeafRecord {
            not_after: None,
            ..fine.clone().unwrap()
        });
        assert_eq!(
            renewal(&[fine, unknown_expiry], "CA", "1", 90, now),
            Renewal::Issue(IssueReason::Due)
        );
    }
}
