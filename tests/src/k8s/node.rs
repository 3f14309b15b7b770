//! The Node object and its heartbeats (stand-in for the kubelet's node status
//! manager and lease controller).
//!
//! Registers Node `--node-name` (labels `kubernetes.io/hostname`,
//! `kubernetes.io/os=linux`, `kubernetes.io/arch`; capacity and allocatable cpu
//! "2", memory "24Gi", pods "110"; InternalIP = the bridge's host address;
//! kubeletVersion v1.34.4), with Ready=True (reason KubeletReady) and
//! MemoryPressure / DiskPressure / PIDPressure = False, and keeps it alive:
//! the Lease `kube-node-lease/NAME` is renewed and the conditions' heartbeat
//! refreshed every [`HEARTBEAT`], so the node lifecycle controller never marks
//! the node NotReady or taints it. A leftover `node.kubernetes.io/not-ready` or
//! `unreachable` taint is removed at start. The numbers are fixed, not measured:
//! nothing here enforces resources. There is no kubelet HTTPS endpoint, so
//! `kubectl logs/exec/port-forward` do not work (logs are files, see `container.rs`).

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use std::time::Duration;

/// How often the lease is renewed and the Ready heartbeat refreshed.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// The kubelet version the node reports (the control plane's).
pub const KUBELET_VERSION: &str = "v1.34.4";
const LEASE_SECONDS: i32 = 40;
const NOT_READY_TAINTS: &[&str] = &[
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];

/// The node's conditions at `now`: Ready, and no pressure of any kind.
pub fn conditions(now: Timestamp, since: Timestamp) -> Vec<NodeCondition> {
    let cond = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(since)),
    };
    vec![
        cond(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        cond(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        cond(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        cond(
            "Ready",
            "True",
            "KubeletReady",
            "raftkv-kubelet (stand-in) is posting ready status",
        ),
    ]
}

/// The status body written at registration and on each heartbeat.
pub fn status(
    host_ip: &str,
    hostname: &str,
    now: Timestamp,
    since: Timestamp,
) -> serde_json::Value {
    let resources =
        json!({"cpu": "2", "memory": "24Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": conditions(now, since),
        "addresses": [
            {"type": "InternalIP", "address": host_ip},
            {"type": "Hostname", "address": hostname},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": "raftkv-kubelet", "systemUUID": "raftkv-kubelet", "bootID": "raftkv-kubelet",
            "kernelVersion": "", "osImage": "raftkv kubelet stand-in (pods are local processes)",
            "containerRuntimeVersion": "process://0", "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
        },
    })
}

/// The Node object to create.
pub fn node_object(name: &str) -> Node {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": arch,
            "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": arch,
        }},
        "spec": {},
    }))
    .expect("static node object")
}

/// Create or update the node, clear not-ready taints, write its status.
pub async fn register(client: &Client, name: &str, host_ip: &str, since: Timestamp) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = match nodes.get_opt(name).await.context("reading node")? {
        Some(n) => n,
        None => nodes
            .create(&PostParams::default(), &node_object(name))
            .await
            .with_context(|| format!("creating node {name}"))?,
    };
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    if taints
        .iter()
        .any(|t| NOT_READY_TAINTS.contains(&t.key.as_str()))
    {
        let kept: Vec<_> = taints
            .into_iter()
            .filter(|t| !NOT_READY_TAINTS.contains(&t.key.as_str()))
            .collect();
        nodes
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"taints": kept}})),
            )
            .await
            .context("removing not-ready taints")?;
    }
    heartbeat(client, name, host_ip, since).await
}

/// Renew the lease and refresh the node status.
pub async fn heartbeat(client: &Client, name: &str, host_ip: &str, since: Timestamp) -> Result<()> {
    let now = Timestamp::now();
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status(host_ip, name, now, since)})),
        )
        .await
        .context("writing node status")?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let spec = LeaseSpec {
        holder_identity: Some(name.to_string()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        renew_time: Some(MicroTime(now)),
        ..LeaseSpec::default()
    };
    match leases.get_opt(name).await.context("reading lease")? {
        Some(mut lease) => {
            lease.spec = Some(spec);
            leases
                .replace(name, &PostParams::default(), &lease)
                .await
                .context("renewing lease")?;
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    owner_references: node.metadata.uid.map(|uid| {
                        vec![OwnerReference {
                            api_version: "v1".into(),
                            kind: "Node".into(),
                            name: name.to_string(),
                            uid,
                            ..OwnerReference::default()
                        }]
                    }),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            leases
                .create(&PostParams::default(), &lease)
                .await
                .context("creating lease")?;
        }
    }
    Ok(())
}

/// Heartbeats forever (errors are logged and retried on the next beat).
pub async fn keep_alive(client: Client, name: String, host_ip: String, since: Timestamp) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        if let Err(e) = heartbeat(&client, &name, &host_ip, since).await {
            tracing::warn!("node heartbeat: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_is_ready_without_pressure_and_reports_its_address() {
        let now = Timestamp::from_second(1_700_000_100).unwrap();
        let since = Timestamp::from_second(1_700_000_000).unwrap();
        let s = status("10.213.0.1", "n1", now, since);
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": "n1"}, "status": s})).unwrap();
        let st = node.status.unwrap();
        let conds = st.conditions.unwrap();
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(ready.last_heartbeat_time, Some(Time(now)));
        assert_eq!(ready.last_transition_time, Some(Time(since)));
        assert!(conds
            .iter()
            .filter(|c| c.type_ != "Ready")
            .all(|c| c.status == "False"));
        assert_eq!(st.addresses.unwrap()[0].address, "10.213.0.1");
        assert_eq!(st.allocatable.unwrap()["pods"].0, "110");
        assert_eq!(st.node_info.unwrap().kubelet_version, KUBELET_VERSION);
        let labels = node_object("n1").metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
    }
}
