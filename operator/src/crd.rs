//! The `RaftCluster` custom resource: what a user asks for (spec) and what the
//! operator reports back (status).
//!
//! The CRD YAML in `crds/` is generated from these types (`raftkv-operator crd`),
//! never written by hand, so the schema the API server validates against and the
//! structs the operator deserializes into cannot drift apart. A test fails when the
//! checked-in file differs from what these types generate.

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
pub use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most members a RaftCluster may have. Raft's write latency and the leader's
/// fan-out grow with every voter; etcd recommends at most 7, and 9 is the hard cap.
pub const MAX_REPLICAS: i32 = 9;

/// Volume size used when `spec.storage.size` is not given.
pub const DEFAULT_STORAGE_SIZE: &str = "1Gi";

/// A Raft-replicated raftkv cluster: one member per pod of a StatefulSet.
// Each printcolumn(...) repeats `type_ = ...`; clippy reads that as a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "raftkv.io",
    version = "v1alpha1",
    kind = "RaftCluster",
    namespaced,
    shortname = "rkc",
    doc = "A raftkv cluster: Raft members in a StatefulSet, scaled one safe membership change at a time.",
    status = "RaftClusterStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Members asked for"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Members that are voters and ready"
    ),
    printcolumn(
        name = "Leader",
        type_ = "string",
        json_path = ".status.leader",
        description = "Pod of the current Raft leader"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.tls) == has(oldSelf.tls)").message(
    "spec.tls can only be set when the RaftCluster is created: members already \
     in the cluster advertise their URLs with or without TLS (back up, and restore \
     into a new RaftCluster with tls)"
))]
pub struct RaftClusterSpec {
    /// Number of members (Raft voters), 1 to 9. Odd numbers are recommended: an even
    /// count tolerates no more failures than one member fewer (a condition says so).
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,
    /// Container image holding the `raftkv` binary.
    pub image: String,
    /// The persistent volume each member keeps its Raft log and data on.
    #[serde(default)]
    pub storage: StorageSpec,
    /// CPU and memory requests and limits of the raftkv container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Additions to every member pod: labels, annotations and scheduling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateOverrides>,
    /// Scheduled backups: when, how many to keep, where they go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotSpec>,
    /// A request to recover a cluster that lost quorum (see operator/README.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoverySpec>,
    /// Start a new cluster from a backup instead of empty. Read once, when the
    /// first member is initialized; ignored afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,
    /// TLS on the client and peer ports, with certificates the operator
    /// issues from its own CA and renews. Only at creation (see the README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Compaction and defragmentation on schedules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceSpec>,
}

/// `spec.maintenance`: what etcd leaves to `--auto-compaction-*` flags and
/// to cron jobs running `etcdctl defrag`, as schedules the operator keeps.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceSpec {
    /// IANA time zone the schedules are read in; UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Discard old revisions (history) on a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<CompactionSpec>,
    /// Give the space of discarded history back, one member at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defragmentation: Option<DefragmentationSpec>,
}

/// `spec.maintenance.compaction`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompactionSpec {
    /// When to compact (cron: 5 fields, or 6 with seconds). Default every
    /// five minutes.
    #[serde(default = "default_compaction_schedule")]
    pub schedule: String,
    /// Revisions of history to keep: each compaction discards what is older
    /// than the current revision minus this (etcd's
    /// `--auto-compaction-mode=revision`).
    #[schemars(range(min = 1))]
    pub retain_revisions: u64,
}

fn default_compaction_schedule() -> String {
    "*/5 * * * *".to_string()
}

/// `spec.maintenance.defragmentation`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefragmentationSpec {
    /// When a round starts (cron). A round defragments every member, one at a
    /// time and only while all are ready, followers first, the leader last.
    pub schedule: String,
}

/// `spec.tls`: every member serves its client and peer ports over TLS only and
/// wants a certificate from the cluster's CA from every client and peer
/// (etcd's `--client-cert-auth` and `--peer-client-cert-auth`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Days a member or client certificate is valid. The operator issues new
    /// ones when a third of that is left (and when the annotation
    /// `raftkv.io/rotate-certificates` changes). Default 90.
    #[serde(default = "default_certificate_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub certificate_days: u32,
}

/// `spec.tls.certificateDays` when not given.
pub const DEFAULT_CERTIFICATE_DAYS: u32 = 90;

fn default_certificate_days() -> u32 {
    DEFAULT_CERTIFICATE_DAYS
}

/// Backups on a cron schedule, taken from one healthy member.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSpec {
    /// Cron pattern: 5 fields (`minute hour day-of-month month day-of-week`) or 6
    /// with a leading seconds field, e.g. `0 3 * * *` (daily at 03:00).
    pub schedule: String,
    /// IANA time zone the schedule is read in, e.g. `Europe/Berlin`. Default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// How many of this cluster's scheduled backups to keep (the newest). Default 7.
    #[serde(default = "default_retain")]
    #[schemars(range(min = 1))]
    pub retain: u32,
    /// Where backups are written. Default: each member's own volume, under `backups/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<BackupVolume>,
}

/// Default `spec.snapshot.retain`.
pub const DEFAULT_RETAIN: u32 = 7;

fn default_retain() -> u32 {
    DEFAULT_RETAIN
}

/// Where backups go.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupVolume {
    /// An existing PersistentVolumeClaim mounted into every member at the backup
    /// directory. It must be ReadWriteMany: all members mount it at once. When
    /// unset, a member writes into its own data volume (`<data-dir>/backups`), so
    /// a backup lives and dies with the member that took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_name: Option<String>,
}

/// Recovery requests.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySpec {
    /// Solo recovery: keep one surviving member's data, make it a one-member
    /// cluster, wipe and re-add the others. Acted on once per generation, and only
    /// when quorum is really lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solo: Option<SoloRecoverySpec>,
    /// How long no member may have heard from a leader before quorum counts as
    /// lost. Default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 5))]
    pub leaderless_seconds: Option<u32>,
}

/// Default `spec.recovery.leaderlessSeconds`.
pub const DEFAULT_LEADERLESS_SECONDS: u32 = 60;

/// Which member survives a solo recovery.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SoloRecoverySpec {
    /// A pod ordinal (`0`, `1`, ...) or `auto`: the reachable member with the
    /// highest applied index.
    pub from_member: IntOrString,
}

/// Where a new cluster's data comes from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// A backup file name in member 0's backup directory (with
    /// `spec.snapshot.volume.claimName`, the shared backup volume).
    pub from_backup: String,
}

/// Persistent storage of each member.
///
/// The API server refuses what cannot be done to existing volumes (CEL rules,
/// checked on every update): they cannot shrink, and cannot move to another
/// class. A bigger size is done by expanding each volume (see
/// [`crate::volumes`]).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!isQuantity(self.size) || !isQuantity(oldSelf.size) || \
     quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0"
).message("storage.size cannot shrink: a volume can only grow"))]
#[x_kube(validation = Rule::new(
    "(has(self.storageClassName) ? self.storageClassName : '') == \
     (has(oldSelf.storageClassName) ? oldSelf.storageClassName : '')"
).message(
    "storage.storageClassName cannot change: volumes cannot move to another class \
     (create a RaftCluster in the new class and restore a backup into it)"
))]
pub struct StorageSpec {
    /// Size of each member's volume, e.g. `10Gi`. Default `1Gi`. May grow
    /// (the volumes are expanded where their StorageClass allows it), never shrink.
    #[serde(default = "default_storage_size")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("isQuantity(self)")
        .message("storage.size must be a quantity, e.g. 10Gi"))]
    pub size: String,
    /// StorageClass of the volumes; the cluster's default class when unset.
    /// Cannot change once set (or unset) at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class_name: Option<String>,
    /// What happens to the member volumes when the RaftCluster is deleted:
    /// `Retain` (the default) keeps them, so an accidental delete loses no
    /// data; `Delete` deletes them with the cluster.
    #[serde(default)]
    pub when_deleted: VolumeRetention,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_storage_size(),
            storage_class_name: None,
            when_deleted: VolumeRetention::default(),
        }
    }
}

/// `spec.storage.whenDeleted`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VolumeRetention {
    /// Keep the volumes: a RaftCluster created again under the same name
    /// finds them, and its pod 0 refuses the old cluster's data (delete the
    /// `data-NAME-*` claims to start over, or restore a backup).
    #[default]
    Retain,
    /// Delete the volumes once the RaftCluster is deleted.
    Delete,
}

fn default_storage_size() -> String {
    DEFAULT_STORAGE_SIZE.to_string()
}

/// What a user may add to the member pods. The operator's own labels, the
/// container and its command always win: they are what makes a pod a member.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverrides {
    /// Extra pod labels (the `app.kubernetes.io/*` labels the operator sets win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

/// Coarse state for `kubectl get rkc`. The conditions say why.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Objects created; waiting for the first member's pod.
    Pending,
    /// The first member is being initialized as a one-member cluster.
    Initializing,
    /// A membership change or a StatefulSet resize is in progress.
    Scaling,
    /// Membership matches the spec and every member is ready.
    Running,
    /// Membership matches or is moving, but some member is not ready, or the
    /// operator refuses a step (see the Degraded condition).
    Degraded,
    /// A solo recovery is under way (see `status.recovery`).
    Recovering,
}

/// What the operator observed and did, written after every reconcile.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RaftClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Pods the StatefulSet runs (the scale subresource's status replicas).
    #[serde(default)]
    pub replicas: i32,
    /// Voters that answer `/readyz` with 200.
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default)]
    pub voters: i32,
    #[serde(default)]
    pub learners: i32,
    /// Pod name of the Raft leader, if one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberSummary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Label selector of the member pods (the scale subresource's selector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Set once member 1 (pod 0) has been initialized as the first member. Never
    /// cleared: from then on no member is ever initialized again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialized: Option<InitializedRecord>,
    /// The learner being added, and since when, so a learner that never catches
    /// up is reported instead of waited for silently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_learner: Option<PendingLearner>,
    /// The newest scheduled backup taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_snapshot: Option<LastSnapshot>,
    /// The last solo recovery request and how far it got; an operator restart
    /// resumes from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryStatus>,
    /// The scheduled compaction and defragmentation (`spec.maintenance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceStatus>,
}

/// One backup the operator took.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastSnapshot {
    /// When it was written (RFC 3339).
    pub time: String,
    /// The schedule's instant it stands for (RFC 3339); instants up to this one
    /// are done, so ticks missed while the operator was down give one backup.
    pub scheduled_time: String,
    /// Store revision the backup holds.
    pub revision: i64,
    pub size_bytes: u64,
    /// Pod that wrote it (with a per-member volume, the one that holds it).
    pub member: String,
    /// File name in that member's backup directory.
    pub file: String,
}

/// `status.maintenance`: the last compaction and defragmentation round.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_compaction: Option<LastCompaction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defragmentation: Option<DefragmentationRound>,
}

/// The newest scheduled compaction.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastCompaction {
    /// The schedule's instant it stands for (RFC 3339).
    pub scheduled_time: String,
    /// When it was done (RFC 3339).
    pub time: String,
    /// History before this revision is gone; 0 when there was not yet more
    /// history than `retainRevisions`.
    pub revision: i64,
}

/// The newest defragmentation round.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefragmentationRound {
    /// The schedule's instant it stands for (RFC 3339).
    pub scheduled_time: String,
    /// Pod ordinals defragmented in this round so far.
    #[serde(default)]
    pub done: Vec<u32>,
    /// When the round finished (RFC 3339); unset while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_time: Option<String>,
}

/// Where a solo recovery is. Phases run in this order and each is recorded
/// before the next starts.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RecoveryPhase {
    /// Quorum loss is proven; the other members are being reset (volume, then pod
    /// deleted), so the chosen member is the only one left with data.
    ResettingOthers,
    /// Admin.RecoverSolo on the chosen member.
    RecoveringSolo,
    /// A one-member cluster serves; members are added back as learners, then voters.
    Growing,
    /// Back to `spec.replicas` members.
    Completed,
    /// Not done: see `message`. Final for this generation.
    Refused,
}

/// The recovery request of one generation and its progress.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryStatus {
    /// metadata.generation of the request this is about.
    pub generation: i64,
    pub phase: RecoveryPhase,
    /// Pod ordinal of the member that keeps its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<u32>,
    /// Its epoch before recovery: a higher one reported means RecoverSolo took effect.
    #[serde(default)]
    pub from_epoch: u64,
    /// Ordinals already reset in this recovery.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reset: Vec<u32>,
    /// Machine-readable reason of the last change (the SoloRecovery condition's).
    #[serde(default)]
    pub reason: String,
    /// What RecoverSolo kept (revision, applied index), or why it was refused.
    #[serde(default)]
    pub message: String,
    /// When the phase last changed (RFC 3339).
    pub since: String,
}

/// Proof that the cluster was bootstrapped, and with which identity.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitializedRecord {
    /// The Raft cluster id the first member reported, in hex.
    pub cluster_id: String,
    /// The token passed to Admin.Initialize: the RaftCluster's metadata.uid.
    pub cluster_token: String,
    /// The backup the first member was initialized from (`spec.restore.fromBackup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
}

/// A learner added by the operator and not yet promoted.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingLearner {
    pub id: u64,
    /// When the operator first saw it as a learner (RFC 3339).
    pub since: String,
}

/// One Raft member as the operator last saw it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberSummary {
    /// Raft member id (pod ordinal + 1).
    pub id: u64,
    /// Pod name (empty until the member has started and published it).
    pub name: String,
    /// `leader`, `follower`, `candidate`, `learner`, or `unreachable`.
    pub role: String,
    /// Applied everything it knows to be committed, and knows a leader.
    pub caught_up: bool,
}

/// The CRD as YAML, exactly as checked in under `crds/`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&RaftCluster::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_defaults_fill_storage_and_leave_overrides_empty() {
        let spec: RaftClusterSpec =
            serde_json::from_value(serde_json::json!({"replicas": 3, "image": "raftkv:dev"}))
                .expect("minimal spec parses");
        assert_eq!(spec.storage.size, "1Gi");
        assert_eq!(spec.storage.storage_class_name, None);
        assert!(spec.pod_template.is_none());
    }

    #[test]
    fn crd_has_names_scope_and_short_name() {
        let crd = RaftCluster::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("raftclusters.raftkv.io"));
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, "RaftCluster");
        assert_eq!(crd.spec.names.short_names, Some(vec!["rkc".to_string()]));
    }
}
