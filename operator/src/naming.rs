//! How everything belonging to one RaftCluster is named: its Kubernetes objects,
//! its pods, their DNS names and URLs, and the Raft member id of each pod.
//!
//! Kept in one place because three parties must agree on it: the resource
//! builders (which create the objects), the pod's command line (which advertises
//! the URLs) and the executor (which dials them).

use std::collections::BTreeMap;

/// The member container's ports (etcd's conventions).
pub const CLIENT_PORT: i32 = 2379;
pub const PEER_PORT: i32 = 2380;
pub const METRICS_PORT: i32 = 2381;

/// Where a member keeps its data inside the pod.
pub const DATA_DIR: &str = "/var/lib/raftkv";
/// Name of the StatefulSet's volume claim template (PVCs are `data-<pod>`).
pub const DATA_VOLUME: &str = "data";
/// Where members write backups when `spec.snapshot.volume.claimName` is set
/// (that claim is mounted here). Otherwise the node's default, `<data-dir>/backups`.
pub const BACKUP_DIR: &str = "/var/lib/raftkv-backups";
/// Name of the pod volume of a shared backup claim.
pub const BACKUP_VOLUME: &str = "backups";

/// Where a member's certificate, key and CA are mounted when `spec.tls` is set
/// (the member Secret's `tls.crt`, `tls.key` and `ca.crt`).
pub const TLS_DIR: &str = "/etc/raftkv/tls";
/// Name of the pod volume of the member certificate Secret.
pub const TLS_VOLUME: &str = "tls";

/// The operator's field manager for server-side apply, and its events' reporter.
pub const MANAGER: &str = "raftkv-operator";

/// The Raft member id of the pod with `ordinal`. Never 0 (etcd's "no member").
pub fn member_id(ordinal: u32) -> u64 {
    u64::from(ordinal) + 1
}

/// The pod ordinal of Raft member `id`, if `id` follows the operator's scheme.
pub fn ordinal_of(id: u64) -> Option<u32> {
    id.checked_sub(1).and_then(|o| u32::try_from(o).ok())
}

/// The names of one RaftCluster's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNames {
    /// The RaftCluster's name; also the StatefulSet's, the client Service's and the PDB's.
    pub cluster: String,
    pub namespace: String,
}

impl ClusterNames {
    pub fn new(cluster: impl Into<String>, namespace: impl Into<String>) -> ClusterNames {
        ClusterNames {
            cluster: cluster.into(),
            namespace: namespace.into(),
        }
    }

    pub fn statefulset(&self) -> String {
        self.cluster.clone()
    }

    /// The client Service (port 2379), what applications use.
    pub fn client_service(&self) -> String {
        self.cluster.clone()
    }

    /// The headless Service giving every pod a stable DNS name.
    pub fn peer_service(&self) -> String {
        format!("{}-peer", self.cluster)
    }

    pub fn pod_disruption_budget(&self) -> String {
        self.cluster.clone()
    }

    pub fn pod(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.cluster)
    }

    /// The PVC the StatefulSet creates for `ordinal`.
    pub fn pvc(&self, ordinal: u32) -> String {
        format!("{DATA_VOLUME}-{}", self.pod(ordinal))
    }

    /// `<pod>.<headless service>.<namespace>.svc`: resolvable for not-ready pods too.
    pub fn pod_host(&self, ordinal: u32) -> String {
        format!(
            "{}.{}.{}.svc",
            self.pod(ordinal),
            self.peer_service(),
            self.namespace
        )
    }

    /// The peer URL member `ordinal` advertises: `https://` when the cluster
    /// runs with TLS.
    pub fn peer_url(&self, ordinal: u32, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{}:{PEER_PORT}", self.pod_host(ordinal))
    }

    /// The Secret holding the cluster's certificate authority (`ca.crt`,
    /// `ca.key`), when `spec.tls` is set.
    pub fn ca_secret(&self) -> String {
        format!("{}-ca", self.cluster)
    }

    /// The Secret every member mounts: its certificate for the client and
    /// peer ports (`tls.crt`, `tls.key`) and the CA (`ca.crt`).
    pub fn member_tls_secret(&self) -> String {
        format!("{}-member-tls", self.cluster)
    }

    /// The Secret with the client certificate (common name `root`) that
    /// etcdctl, applications and the operator itself present.
    pub fn client_tls_secret(&self) -> String {
        format!("{}-client-tls", self.cluster)
    }

    /// The DNS names a member certificate is valid for: every pod under the
    /// headless Service and the client Service, in their short and
    /// cluster-domain forms, and `localhost` (a client inside the pod).
    pub fn member_dns_names(&self, cluster_domain: &str) -> Vec<String> {
        let (ns, peers, client) = (&self.namespace, self.peer_service(), self.client_service());
        vec![
            format!("*.{peers}.{ns}.svc"),
            format!("*.{peers}.{ns}.svc.{cluster_domain}"),
            client.clone(),
            format!("{client}.{ns}"),
            format!("{client}.{ns}.svc"),
            format!("{client}.{ns}.svc.{cluster_domain}"),
            "localhost".to_string(),
        ]
    }

    /// `host:port` of the member's client (etcd + Admin gRPC) listener.
    pub fn client_endpoint(&self, ordinal: u32) -> String {
        format!("{}:{CLIENT_PORT}", self.pod_host(ordinal))
    }

    /// Labels identifying this cluster's pods (the StatefulSet's selector).
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "raftkv".to_string()),
            (
                "app.kubernetes.io/instance".to_string(),
                self.cluster.clone(),
            ),
        ])
    }

    /// Every label the operator puts on the objects it owns.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert(
            "app.kubernetes.io/component".to_string(),
            "member".to_string(),
        );
        labels.insert(
            "app.kubernetes.io/managed-by".to_string(),
            MANAGER.to_string(),
        );
        labels
    }

    /// The selector as a string, for `status.selector` (the scale subresource).
    pub fn selector_string(&self) -> String {
        self.selector_labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_ordinals_are_offset_by_one() {
        assert_eq!(member_id(0), 1);
        assert_eq!(ordinal_of(1), Some(0));
        assert_eq!(ordinal_of(0), None);
        assert_eq!(ordinal_of(member_id(8)), Some(8));
    }

    #[test]
    fn urls_use_the_headless_service() {
        let n = ClusterNames::new("demo", "prod");
        assert_eq!(
            n.peer_url(2, false),
            "http://demo-2.demo-peer.prod.svc:2380"
        );
        assert_eq!(
            n.peer_url(2, true),
            "https://demo-2.demo-peer.prod.svc:2380"
        );
        assert_eq!(n.client_endpoint(0), "demo-0.demo-peer.prod.svc:2379");
        assert_eq!(n.pvc(1), "data-demo-1");
        assert_eq!(
            n.selector_string(),
            "app.kubernetes.io/instance=demo,app.kubernetes.io/name=raftkv"
        );
    }
}
