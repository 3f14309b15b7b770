//! Cluster DNS without a DNS server: per-pod `/etc/hosts` files (stand-in for
//! CoreDNS, and for kube-proxy).
//!
//! Each pod gets its own hosts file, bind-mounted over `/etc/hosts` in its mount
//! namespace and rewritten in place (never replaced by a rename, which a bind
//! mount would not see) within about a second of a Pod, Service or
//! EndpointSlice change. It maps, for every namespace:
//!
//! - each pod with `spec.hostname` and `spec.subdomain` and an IP:
//!   `HOST.SUB.NS.svc.DOMAIN`, `HOST.SUB.NS.svc`, `HOST.SUB.NS`, and `HOST.SUB`
//!   when the reader is in the same namespace (what the search path would give).
//!   Unlike CoreDNS, this does not require the headless Service `SUB` to exist
//!   and includes pods that are not ready: a StatefulSet's members must find each
//!   other before they are ready, which is what `publishNotReadyAddresses` gives
//!   on a real cluster;
//! - each Service to the addresses of its ready endpoints (EndpointSlices):
//!   `SVC.NS.svc.DOMAIN`, `SVC.NS.svc`, `SVC.NS`, and `SVC` from the same
//!   namespace. For a headless Service that is what CoreDNS answers. For a
//!   ClusterIP Service it stands in for kube-proxy, which does not exist here:
//!   clients connect to an endpoint directly, so the Service's `port` must equal
//!   its `targetPort` (true of every Service raftkv uses);
//! - `kubernetes.default.svc.DOMAIN` (and shorter forms) to the API server's host IP;
//! - the pod's own hostname (and FQDN when it has a subdomain) to its IP.
//!
//! A copy for the host namespace (no namespace-relative short forms) is written
//! to `STATE/hosts` for test processes. SRV records, ExternalName Services and
//! search-path semantics beyond the short forms above are not provided.

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

/// One name group: the namespace it lives in, the relative name (`HOST.SUB` or
/// `SVC`), and its IPs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Record {
    pub namespace: String,
    pub name: String,
    pub ips: Vec<String>,
}

/// Every record the cluster's objects imply.
pub fn records(
    pods: &[impl Borrow<Pod>],
    services: &[impl Borrow<Service>],
    slices: &[impl Borrow<EndpointSlice>],
) -> Vec<Record> {
    let mut out = BTreeSet::new();
    for pod in pods {
        let pod: &Pod = pod.borrow();
        let (Some(spec), Some(ns)) = (&pod.spec, &pod.metadata.namespace) else {
            continue;
        };
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        if let (Some(host), Some(sub), Some(ip)) = (&spec.hostname, &spec.subdomain, ip) {
            if pod.metadata.deletion_timestamp.is_none() {
                out.insert(Record {
                    namespace: ns.clone(),
                    name: format!("{host}.{sub}"),
                    ips: vec![ip],
                });
            }
        }
    }
    for svc in services {
        let svc: &Service = svc.borrow();
        let (Some(name), Some(ns)) = (&svc.metadata.name, &svc.metadata.namespace) else {
            continue;
        };
        let mut ips = BTreeSet::new();
        for slice in slices {
            let slice: &EndpointSlice = slice.borrow();
            let owner = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"));
            if owner != Some(name) || slice.metadata.namespace.as_ref() != Some(ns) {
                continue;
            }
            if slice.address_type != "IPv4" {
                continue;
            }
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if ready {
                    ips.extend(ep.addresses.iter().cloned());
                }
            }
        }
        if !ips.is_empty() {
            out.insert(Record {
                namespace: ns.clone(),
                name: name.clone(),
                ips: ips.into_iter().collect(),
            });
        }
    }
    out.into_iter().collect()
}

/// The pod a hosts file is for, or `None` for the host namespace's copy.
pub struct Reader<'a> {
    pub namespace: &'a str,
    pub ip: &'a str,
    pub hostname: &'a str,
    pub subdomain: Option<&'a str>,
}

/// The text of a hosts file.
pub fn render(
    records: &[Record],
    reader: Option<&Reader<'_>>,
    cluster_domain: &str,
    api_host_ip: &str,
) -> String {
    let mut out = String::from(
        "# Written by raftkv-kubelet (stand-in for cluster DNS; see tests/src/k8s/hosts.rs)\n\
         127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    if let Some(r) = reader {
        let mut names = vec![r.hostname.to_string()];
        if let Some(sub) = r.subdomain {
            names.insert(
                0,
                format!("{}.{sub}.{}.svc.{cluster_domain}", r.hostname, r.namespace),
            );
        }
        out.push_str(&format!("{}\t{}\n", r.ip, names.join(" ")));
    }
    let kubernetes = Record {
        namespace: "default".into(),
        name: "kubernetes".into(),
        ips: vec![api_host_ip.to_string()],
    };
    // The real `kubernetes` Service's endpoint is the API server's advertised
    // address; pods reach it at `api_host_ip`, so that record wins.
    let others = records
        .iter()
        .filter(|r| !(r.namespace == "default" && r.name == "kubernetes"));
    for rec in std::iter::once(&kubernetes).chain(others) {
        let ns = &rec.namespace;
        let n = &rec.name;
        let mut names = vec![
            format!("{n}.{ns}.svc.{cluster_domain}"),
            format!("{n}.{ns}.svc"),
            format!("{n}.{ns}"),
        ];
        if reader.is_some_and(|r| r.namespace == ns) {
            names.push(n.clone());
        }
        for ip in &rec.ips {
            out.push_str(&format!("{ip}\t{}\n", names.join(" ")));
        }
    }
    out
}

/// Rewrite `path` in place if its content differs (a bind mount of it sees the change).
pub fn write_in_place(path: &Path, content: &str) -> std::io::Result<bool> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(content) {
        return Ok(false);
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(content.as_bytes())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, sub: Option<&str>, ip: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [], "hostname": name, "subdomain": sub},
            "status": {"podIP": ip}
        }))
        .unwrap()
    }

    fn svc(ns: &str, name: &str) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}})).unwrap()
    }

    fn slice(ns: &str, svc: &str, eps: &[(&str, Option<bool>)]) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{svc}-abc"), "namespace": ns,
                          "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "endpoints": eps.iter().map(|(ip, ready)| json!({"addresses": [ip], "conditions": {"ready": ready}})).collect::<Vec<_>>()
        }))
        .unwrap()
    }

    fn fixture() -> Vec<Record> {
        let pods = vec![
            pod("db", "rc-0", Some("rc-peer"), Some("10.213.0.2")),
            pod("db", "rc-1", Some("rc-peer"), Some("10.213.0.3")),
            pod("db", "rc-2", Some("rc-peer"), None), // no IP yet
            pod("db", "loner", None, Some("10.213.0.9")),
        ];
        let services = vec![
            svc("db", "rc-peer"),
            svc("db", "rc"),
            svc("db", "empty"),
            svc("default", "kubernetes"),
        ];
        let slices = vec![
            slice(
                "db",
                "rc-peer",
                &[("10.213.0.2", Some(true)), ("10.213.0.3", None)],
            ),
            slice(
                "db",
                "rc",
                &[("10.213.0.2", Some(true)), ("10.213.0.3", Some(false))],
            ),
            slice("other", "rc", &[("10.213.0.50", Some(true))]),
            slice("default", "kubernetes", &[("192.168.1.5", Some(true))]),
        ];
        records(&pods, &services, &slices)
    }

    #[test]
    fn records_cover_pods_and_ready_endpoints() {
        let recs = fixture();
        let find = |name: &str| recs.iter().find(|r| r.name == name).map(|r| r.ips.clone());
        assert_eq!(find("rc-0.rc-peer"), Some(vec!["10.213.0.2".to_string()]));
        assert_eq!(find("rc-2.rc-peer"), None);
        assert_eq!(find("loner"), None);
        assert_eq!(
            find("rc-peer"),
            Some(vec!["10.213.0.2".to_string(), "10.213.0.3".to_string()])
        );
        assert_eq!(find("rc"), Some(vec!["10.213.0.2".to_string()]));
        assert_eq!(find("empty"), None);
    }

    #[test]
    fn rendering_gives_short_names_only_to_the_same_namespace() {
        let recs = fixture();
        let reader = Reader {
            namespace: "db",
            ip: "10.213.0.2",
            hostname: "rc-0",
            subdomain: Some("rc-peer"),
        };
        let text = render(&recs, Some(&reader), "cluster.local", "10.213.0.1");
        assert!(
            text.contains("10.213.0.2\trc-0.rc-peer.db.svc.cluster.local rc-0\n"),
            "{text}"
        );
        assert!(text.contains(
            "10.213.0.3\trc-1.rc-peer.db.svc.cluster.local rc-1.rc-peer.db.svc rc-1.rc-peer.db rc-1.rc-peer\n"
        ));
        assert!(text.contains("10.213.0.1\tkubernetes.default.svc.cluster.local kubernetes.default.svc kubernetes.default\n"));
        assert!(text.contains("10.213.0.2\trc.db.svc.cluster.local rc.db.svc rc.db rc\n"));

        let other = Reader {
            namespace: "ops",
            ip: "10.213.0.8",
            hostname: "op",
            subdomain: None,
        };
        let text = render(&recs, Some(&other), "cluster.local", "10.213.0.1");
        assert!(text.contains("10.213.0.8\top\n"));
        assert!(
            text.contains("10.213.0.2\trc.db.svc.cluster.local rc.db.svc rc.db\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("kubernetes.default.svc.cluster.local").count(),
            1,
            "{text}"
        );
        assert!(!text.contains("192.168.1.5"), "{text}");
        let host = render(&recs, None, "k8s.test", "10.213.0.1");
        assert!(host.contains("rc-1.rc-peer.db.svc.k8s.test rc-1.rc-peer.db.svc rc-1.rc-peer.db\n"));
    }

    #[test]
    fn writes_in_place_keeping_the_inode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts");
        assert!(write_in_place(&p, "a long first version\n").unwrap());
        let inode = std::fs::metadata(&p).unwrap().ino();
        assert!(!write_in_place(&p, "a long first version\n").unwrap());
        assert!(write_in_place(&p, "b\n").unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "b\n");
        assert_eq!(std::fs::metadata(&p).unwrap().ino(), inode);
    }
}
