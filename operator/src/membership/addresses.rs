//! Where the members of one RaftCluster are reached, and how: the address of
//! each pod's member and, for a cluster with `spec.tls`, the CA its
//! certificate chains to and the client certificate the operator presents.
//!
//! Injected into every executor ([`super::executor::Executor`]), so the same
//! calls reach pods under a headless Service on Kubernetes and ports on
//! 127.0.0.1 in tests.

use crate::naming::ClusterNames;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// Where the member of each pod ordinal is reached.
pub trait MemberAddresses: Send + Sync {
    /// `host:port` of the member's client listener (etcd API + Admin).
    fn client_endpoint(&self, ordinal: u32) -> String;
    /// The peer URL the member advertises, as given to AddMember.
    fn peer_url(&self, ordinal: u32) -> String;
    /// TLS towards the members, when their client ports speak only TLS.
    fn tls(&self) -> Option<&ClientTls> {
        None
    }
}

/// Pods under the cluster's headless Service, in plaintext.
impl MemberAddresses for ClusterNames {
    fn client_endpoint(&self, ordinal: u32) -> String {
        ClusterNames::client_endpoint(self, ordinal)
    }
    fn peer_url(&self, ordinal: u32) -> String {
        ClusterNames::peer_url(self, ordinal, false)
    }
}

/// What the operator trusts and presents on a member's TLS client port (PEM).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The cluster's CA: a member's certificate must chain to it.
    pub ca_pem: String,
    /// The client certificate (common name `root`) and its key.
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClientTls {
    // Never print a private key into a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// tonic's (and etcd-client's) settings for a connection to `host`, whose
    /// certificate must name it.
    pub fn config(&self, host: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(host)
    }
}

/// Pods under the cluster's headless Service, over TLS when `tls` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEndpoints {
    pub names: ClusterNames,
    pub tls: Option<ClientTls>,
}

impl MemberEndpoints {
    pub fn plain(names: ClusterNames) -> MemberEndpoints {
        MemberEndpoints { names, tls: None }
    }
}

impl MemberAddresses for MemberEndpoints {
    fn client_endpoint(&self, ordinal: u32) -> String {
        self.names.client_endpoint(ordinal)
    }
    fn peer_url(&self, ordinal: u32) -> String {
        self.names.peer_url(ordinal, self.tls.is_some())
    }
    fn tls(&self) -> Option<&ClientTls> {
        self.tls.as_ref()
    }
}

/// The host part of a `host:port` endpoint (what a certificate must name).
pub fn host_of(endpoint: &str) -> &str {
    endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host)
}
