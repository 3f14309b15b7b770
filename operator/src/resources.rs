//! The Kubernetes objects a RaftCluster owns, as pure functions of it.
//!
//! Nothing here talks to the API server: the controller server-side-applies what
//! these return. Keeping them pure is what lets tests check every flag, probe,
//! volume, label and owner reference without a cluster.
//!
//! Two inputs are not in the RaftCluster, so the controller passes them in: the
//! StatefulSet's replica count (the membership planner owns it: it moves one
//! pod at a time, and only after the Raft membership allows), and its volume
//! claim template once it exists ([`ClaimTemplate`]: Kubernetes refuses any
//! change to it).

use crate::certificates::{CertAndKey, ISSUED_FOR_ANNOTATION, NOT_AFTER_ANNOTATION};
use crate::crd::RaftCluster;
use crate::naming::{
    ClusterNames, BACKUP_DIR, BACKUP_VOLUME, CLIENT_PORT, DATA_DIR, DATA_VOLUME, METRICS_PORT,
    PEER_PORT, TLS_DIR, TLS_VOLUME,
};
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, Secret, SecretVolumeSource, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::ByteString;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// The uid (and gid) the image runs raftkv as; see the Dockerfile.
pub const MEMBER_UID: i64 = 65532;

/// Why an object cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("RaftCluster has no {0} yet (it must come from the API server)")]
    MissingMetadata(&'static str),
}

/// Names and owner reference shared by every owned object.
pub struct Owned {
    pub names: ClusterNames,
    owner: OwnerReference,
}

impl Owned {
    pub fn of(rc: &RaftCluster) -> Result<Owned, BuildError> {
        let namespace = rc
            .namespace()
            .ok_or(BuildError::MissingMetadata("namespace"))?;
        if rc.meta().uid.is_none() {
            return Err(BuildError::MissingMetadata("uid"));
        }
        let owner = rc
            .controller_owner_ref(&())
            .ok_or(BuildError::MissingMetadata("name"))?;
        Ok(Owned {
            names: ClusterNames::new(rc.name_any(), namespace),
            owner,
        })
    }

    fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.names.namespace.clone()),
            labels: Some(self.names.labels()),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port: number,
        target_port: Some(IntOrString::Int(number)),
        ..ServicePort::default()
    }
}

/// The headless Service that gives each pod its DNS name. It publishes pods that
/// are not ready, because a member is not ready until it has been added to the
/// cluster, and the operator and peers must reach it before that. It also
/// names each member's metrics port: a ServiceMonitor on it (the chart's
/// `members.serviceMonitor`) scrapes every member, ready or not.
pub fn peer_service(owned: &Owned) -> Service {
    Service {
        metadata: owned.meta(owned.names.peer_service()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(owned.names.selector_labels()),
            ports: Some(vec![
                port("peer", PEER_PORT),
                port("client", CLIENT_PORT),
                port("metrics", METRICS_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The Service applications use: ready members only, port 2379.
pub fn client_service(owned: &Owned) -> Service {
    Service {
        metadata: owned.meta(owned.names.client_service()),
        spec: Some(ServiceSpec {
            selector: Some(owned.names.selector_labels()),
            ports: Some(vec![port("client", CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Voluntary disruptions (drains, evictions) may take only members beyond a
/// quorum of `members`: none of 1 or 2, one of 3, two of 5. A fixed
/// `maxUnavailable: 1` let a drain take one of two members, or the only one.
/// The caller passes the larger of the spec's and the StatefulSet's counts,
/// so a shrink in progress keeps the quorum of the members it still has.
pub fn pod_disruption_budget(owned: &Owned, members: u32) -> PodDisruptionBudget {
    let quorum = members.max(1) / 2 + 1;
    PodDisruptionBudget {
        metadata: owned.meta(owned.names.pod_disruption_budget()),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(quorum as i32)),
            selector: Some(LabelSelector {
                match_labels: Some(owned.names.selector_labels()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// The shell line that starts a member. The node id is the pod ordinal + 1, and
/// the ordinal is only known inside the pod (the suffix of its name), so a tiny
/// POSIX shell prologue computes it; everything else is a plain `raftkv serve`
/// flag. Every pod uses `--join`: no pod ever bootstraps a cluster on its own.
/// With a shared backup claim, backups go to where it is mounted. With TLS,
/// both ports speak only TLS and want a certificate from the cluster's CA
/// (etcd's flags; the member Secret is mounted at [`TLS_DIR`]).
pub fn member_command(names: &ClusterNames, shared_backups: bool, tls: bool) -> String {
    let backup_dir = if shared_backups {
        format!(" --backup-dir {BACKUP_DIR}")
    } else {
        String::new()
    };
    // etcd's flags for one port: "" for the client port, "peer-" for the peer port.
    let port_tls = |prefix: &str| {
        format!(
            " --{prefix}cert-file {TLS_DIR}/tls.crt --{prefix}key-file {TLS_DIR}/tls.key \
             --{prefix}trusted-ca-file {TLS_DIR}/ca.crt --{prefix}client-cert-auth"
        )
    };
    let (scheme, tls_flags) = if tls {
        ("https", format!("{}{}", port_tls(""), port_tls("peer-")))
    } else {
        ("http", String::new())
    };
    let host = format!(
        "${{POD_NAME}}.{}.${{POD_NAMESPACE}}.svc",
        names.peer_service()
    );
    [
        "set -eu".to_string(),
        r#"ordinal="${POD_NAME##*-}""#.to_string(),
        format!(
            "exec raftkv serve --join --id \"$((ordinal + 1))\" --name \"${{POD_NAME}}\" \
             --data-dir {DATA_DIR} \
             --listen-client-urls {scheme}://0.0.0.0:{CLIENT_PORT} \
             --advertise-client-urls \"{scheme}://{host}:{CLIENT_PORT}\" \
             --listen-peer-urls {scheme}://0.0.0.0:{PEER_PORT} \
             --initial-advertise-peer-urls \"{scheme}://{host}:{PEER_PORT}\" \
             --listen-metrics-urls http://0.0.0.0:{METRICS_PORT} \
             --log-format json{backup_dir}{tls_flags}"
        ),
    ]
    .join("\n")
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(METRICS_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// The shared backup claim (`spec.snapshot.volume.claimName`), if any.
pub fn backup_claim(rc: &RaftCluster) -> Option<&str> {
    rc.spec
        .snapshot
        .as_ref()
        .and_then(|s| s.volume.as_ref())
        .and_then(|v| v.claim_name.as_deref())
        .filter(|c| !c.is_empty())
}

fn member_container(rc: &RaftCluster, names: &ClusterNames) -> Container {
    let mut volume_mounts = vec![VolumeMount {
        name: DATA_VOLUME.to_string(),
        mount_path: DATA_DIR.to_string(),
        ..VolumeMount::default()
    }];
    if backup_claim(rc).is_some() {
        volume_mounts.push(VolumeMount {
            name: BACKUP_VOLUME.to_string(),
            mount_path: BACKUP_DIR.to_string(),
            ..VolumeMount::default()
        });
    }
    if rc.spec.tls.is_some() {
        volume_mounts.push(VolumeMount {
            name: TLS_VOLUME.to_string(),
            mount_path: TLS_DIR.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let container_port = |name: &str, port: i32| ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        ..ContainerPort::default()
    };
    Container {
        name: "raftkv".to_string(),
        image: Some(rc.spec.image.clone()),
        command: Some(vec!["/bin/sh".to_string(), "-c".to_string()]),
        args: Some(vec![member_command(
            names,
            backup_claim(rc).is_some(),
            rc.spec.tls.is_some(),
        )]),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        ports: Some(vec![
            container_port("client", CLIENT_PORT),
            container_port("peer", PEER_PORT),
            container_port("metrics", METRICS_PORT),
        ]),
        // Ready = in the cluster, knows a leader, caught up: what the client
        // Service and the PDB should count.
        readiness_probe: Some(http_probe("/readyz", 5, 1)),
        // Alive = the process serves HTTP. A member waiting to be added is alive.
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(10),
            ..http_probe("/healthz", 10, 6)
        }),
        resources: rc.spec.resources.clone(),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    }
}

/// The size and class of the StatefulSet's data volume claim template. The
/// API server refuses to change a StatefulSet's claim templates, so once the
/// StatefulSet exists this stays what it was created with; a bigger
/// `spec.storage.size` reaches the volumes by expanding each claim instead
/// (see [`crate::volumes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimTemplate {
    pub size: String,
    pub storage_class_name: Option<String>,
}

impl ClaimTemplate {
    /// For a StatefulSet about to be created: what the spec asks for.
    pub fn of_spec(rc: &RaftCluster) -> ClaimTemplate {
        ClaimTemplate {
            size: rc.spec.storage.size.clone(),
            storage_class_name: rc.spec.storage.storage_class_name.clone(),
        }
    }

    /// What an existing StatefulSet's data claim template holds, if it has one.
    pub fn of_statefulset(sts: &StatefulSet) -> Option<ClaimTemplate> {
        let claim = sts
            .spec
            .as_ref()?
            .volume_claim_templates
            .as_ref()?
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(DATA_VOLUME))?;
        let spec = claim.spec.as_ref()?;
        Some(ClaimTemplate {
            size: spec
                .resources
                .as_ref()?
                .requests
                .as_ref()?
                .get("storage")?
                .0
                .clone(),
            storage_class_name: spec.storage_class_name.clone(),
        })
    }
}

/// The pod's volumes besides its data claim: a shared (ReadWriteMany) claim
/// every member writes backups to, and with TLS the member certificate.
fn pod_volumes(rc: &RaftCluster, names: &ClusterNames) -> Option<Vec<Volume>> {
    let mut volumes = Vec::new();
    if let Some(claim) = backup_claim(rc) {
        volumes.push(Volume {
            name: BACKUP_VOLUME.to_string(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.to_string(),
                read_only: None,
            }),
            ..Volume::default()
        });
    }
    if rc.spec.tls.is_some() {
        volumes.push(Volume {
            name: TLS_VOLUME.to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names.member_tls_secret()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    (!volumes.is_empty()).then_some(volumes)
}

/// The Secret holding the cluster's CA (`ca.crt`, `ca.key`).
pub fn ca_secret(owned: &Owned, ca: &CertAndKey) -> Secret {
    Secret {
        metadata: owned.meta(owned.names.ca_secret()),
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([
            (
                "ca.crt".to_string(),
                ByteString(ca.cert_pem.clone().into_bytes()),
            ),
            (
                "ca.key".to_string(),
                ByteString(ca.key_pem.clone().into_bytes()),
            ),
        ])),
        ..Secret::default()
    }
}

/// A certificate Secret (`kubernetes.io/tls`: `tls.crt`, `tls.key`, and the
/// CA as `ca.crt`), with when it expires and the rotation it was issued for.
pub fn leaf_secret(
    owned: &Owned,
    name: String,
    leaf: &CertAndKey,
    ca: &CertAndKey,
    not_after: Timestamp,
    issued_for: &str,
) -> Secret {
    let mut metadata = owned.meta(name);
    metadata.annotations = Some(BTreeMap::from([
        (NOT_AFTER_ANNOTATION.to_string(), not_after.to_string()),
        (ISSUED_FOR_ANNOTATION.to_string(), issued_for.to_string()),
    ]));
    Secret {
        metadata,
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(BTreeMap::from([
            (
                "tls.crt".to_string(),
                ByteString(leaf.cert_pem.clone().into_bytes()),
            ),
            (
                "tls.key".to_string(),
                ByteString(leaf.key_pem.clone().into_bytes()),
            ),
            (
                "ca.crt".to_string(),
                ByteString(ca.cert_pem.clone().into_bytes()),
            ),
        ])),
        ..Secret::default()
    }
}

fn data_claim(owned: &Owned, template: &ClaimTemplate) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_string()),
            labels: Some(owned.names.labels()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: template.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(template.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The StatefulSet running one member per pod, with `replicas` pods (decided by
/// the membership planner, never directly by the spec) and `claims` as its
/// volume claim template.
pub fn statefulset(
    rc: &RaftCluster,
    owned: &Owned,
    replicas: i32,
    claims: &ClaimTemplate,
) -> StatefulSet {
    let overrides = rc.spec.pod_template.clone().unwrap_or_default();
    // The user's labels first, so the operator's (which the selector needs) win.
    let mut pod_labels = overrides.labels.clone();
    pod_labels.extend(owned.names.labels());
    let annotations = (!overrides.annotations.is_empty()).then(|| overrides.annotations.clone());
    StatefulSet {
        metadata: owned.meta(owned.names.statefulset()),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(owned.names.peer_service()),
            // The operator orders pod creation itself (one member at a time, after
            // Raft allows); OrderedReady would also block restarting pod N while
            // pod N-1 is not ready, which a recovering cluster cannot afford.
            pod_management_policy: Some("Parallel".to_string()),
            // Restarts for a new template are the operator's (see
            // crate::rollout): Kubernetes' rolling update would restart a
            // healthy member while another is down and take the quorum.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_string()),
                rolling_update: None,
            }),
            selector: LabelSelector {
                match_labels: Some(owned.names.selector_labels()),
                ..LabelSelector::default()
            },
            // Volumes are never deleted by Kubernetes: an outside `kubectl
            // scale` would otherwise take members' data with their pods. The
            // operator deletes a volume itself once its member is out of Raft
            // and its pod gone (the planner's rule 4), so a later scale-up
            // never resumes a removed member from stale data. Deleting the
            // RaftCluster keeps the volumes too (the data outlives an accident).
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_scaled: Some("Retain".to_string()),
                    when_deleted: Some("Retain".to_string()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations,
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![member_container(rc, &owned.names)],
                    node_selector: (!overrides.node_selector.is_empty())
                        .then(|| overrides.node_selector.clone()),
                    tolerations: (!overrides.tolerations.is_empty())
                        .then(|| overrides.tolerations.clone()),
                    affinity: overrides.affinity.clone(),
                    volumes: pod_volumes(rc, &owned.names),
                    // Give a member time to hand off leadership and flush on SIGTERM.
                    termination_grace_period_seconds: Some(30),
                    // The image runs raftkv as uid 65532 (not root); most storage
                    // hands out root-owned volumes, so the data volume's group is
                    // set to that uid's group for the member to be able to write.
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(MEMBER_UID),
                        run_as_group: Some(MEMBER_UID),
                        fs_group: Some(MEMBER_UID),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![data_claim(owned, claims)]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}
