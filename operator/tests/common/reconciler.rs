//! The reconciler against a scripted API server: fake members, the requests
//! every reconcile starts with, and running one reconcile.

use super::apiserver::{expect, mock_client, serve, Expect, Reply, Seen};
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use raftkv_operator::controller::{reconcile, Context, MemberApi, FINALIZER};
use raftkv_operator::crd::{InitializedRecord, RaftCluster, RaftClusterStatus};
use raftkv_operator::membership::admin::BackupInfo;
use raftkv_operator::membership::executor::{ExecError, MemberObservation, Outcome};
use raftkv_operator::membership::MemberEndpoints;
use raftkv_operator::membership::{MemberReport, Observed, RaftMember, Role, Step};
use raftkv_operator::metrics::Metrics;
use raftkv_operator::recovery::executor::SoloRecovered;
use raftkv_operator::snapshots::{BackupDone, TakeBackup};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Members that report a fixed observation and record the steps sent to them.
#[derive(Default)]
pub struct FakeMembers {
    pub observation: MemberObservation,
    pub executed: Mutex<Vec<Step>>,
    /// Backups asked for.
    pub backups: Mutex<Vec<TakeBackup>>,
    /// Members RecoverSolo was sent to.
    pub solo: Mutex<Vec<u32>>,
    /// MoveLeader calls: (from ordinal, to member id).
    pub moves: Mutex<Vec<(u32, u64)>>,
    /// SaveBackup fails with this message.
    pub backup_error: Option<String>,
    /// Compact calls: (leader ordinal, revisions kept).
    pub compactions: Mutex<Vec<(u32, u64)>>,
    /// Members Defragment was sent to.
    pub defragmented: Mutex<Vec<u32>>,
}

impl MemberApi for FakeMembers {
    async fn observe(
        &self,
        _: &MemberEndpoints,
        _: &str,
        ordinals: Range<u32>,
    ) -> MemberObservation {
        let mut o = self.observation.clone();
        o.reports.retain(|ord, _| ordinals.contains(ord));
        o
    }

    async fn execute(
        &self,
        _: &MemberEndpoints,
        _: &str,
        step: &Step,
        _: &Observed,
    ) -> Result<Outcome, ExecError> {
        self.executed.lock().unwrap().push(step.clone());
        Ok(match step {
            Step::Initialize => Outcome::Initialized {
                cluster_id: 0xc1,
                now: true,
            },
            _ => Outcome::Done,
        })
    }

    async fn take_backup(
        &self,
        _: &MemberEndpoints,
        take: &TakeBackup,
        _retain: u32,
        _ordinals: Vec<u32>,
    ) -> Result<BackupDone, ExecError> {
        self.backups.lock().unwrap().push(take.clone());
        if let Some(message) = &self.backup_error {
            return Err(ExecError::Admin {
                call: "SaveBackup",
                endpoint: "fake".into(),
                status: tonic::Status::unavailable(message.clone()),
            });
        }
        Ok(BackupDone {
            ordinal: take.ordinal,
            info: BackupInfo {
                file_name: take.file_name.clone(),
                size_bytes: 1234,
                revision: 42,
                sha256: "ab".into(),
                modified_unix_secs: 0,
            },
            pruned: Vec::new(),
            prune_errors: Vec::new(),
        })
    }

    async fn move_leader(&self, _: &MemberEndpoints, from: u32, to: u64) -> Result<(), ExecError> {
        self.moves.lock().unwrap().push((from, to));
        Ok(())
    }

    async fn compact(
        &self,
        _: &MemberEndpoints,
        leader: u32,
        retain: u64,
    ) -> Result<i64, ExecError> {
        self.compactions.lock().unwrap().push((leader, retain));
        Ok(900)
    }

    async fn defragment(&self, _: &MemberEndpoints, ordinal: u32) -> Result<(), ExecError> {
        self.defragmented.lock().unwrap().push(ordinal);
        Ok(())
    }

    async fn recover_solo(
        &self,
        _: &MemberEndpoints,
        ordinal: u32,
        _min_leaderless: Duration,
    ) -> Result<SoloRecovered, ExecError> {
        self.solo.lock().unwrap().push(ordinal);
        Ok(SoloRecovered {
            cluster_id: 0xc1,
            epoch: 1,
            last_applied_index: 50,
            revision: 40,
            key_count: 7,
            report: "nothing lost".into(),
        })
    }
}

pub const NS: &str = "/api/v1/namespaces/prod";
pub const APPS: &str = "/apis/apps/v1/namespaces/prod";
pub const RC: &str = "/apis/raftkv.io/v1alpha1/namespaces/prod/raftclusters/demo";
pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/prod/events";
pub const APPLY_QUERY: &str = "?&force=true&fieldManager=raftkv-operator";

pub fn ready(id: u64, role: Role, cluster_id: u64) -> MemberReport {
    MemberReport {
        id,
        role,
        term: 1,
        leader: if cluster_id == 0 { 0 } else { 1 },
        committed_index: 50,
        applied_index: if cluster_id == 0 { 0 } else { 50 },
        last_log_index: 50,
        cluster_id,
        not_ready_reason: if cluster_id == 0 {
            "not a member".into()
        } else {
            String::new()
        },
        epoch: 0,
        millis_since_leader: 0,
    }
}

pub fn members(voters: &[u64], empty_pods: &[u64]) -> FakeMembers {
    let mut reports = BTreeMap::new();
    for &id in voters {
        reports.insert(
            (id - 1) as u32,
            ready(
                id,
                if id == 1 {
                    Role::Leader
                } else {
                    Role::Follower
                },
                0xc1,
            ),
        );
    }
    for &id in empty_pods {
        reports.insert((id - 1) as u32, ready(id, Role::Other, 0));
    }
    let membership = voters
        .iter()
        .map(|&id| RaftMember {
            id,
            is_learner: false,
            name: format!("demo-{}", id - 1),
        })
        .collect();
    FakeMembers {
        observation: MemberObservation {
            reports,
            membership: Some(membership),
        },
        ..FakeMembers::default()
    }
}

pub fn initialized(mut rc: RaftCluster) -> RaftCluster {
    rc.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    rc.status = Some(RaftClusterStatus {
        initialized: Some(InitializedRecord {
            cluster_id: "c1".into(),
            cluster_token: super::UID.into(),
            restored_from: None,
        }),
        ..RaftClusterStatus::default()
    });
    rc
}

pub fn sts_json(replicas: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": "demo", "namespace": "prod"},
           "spec": {"replicas": replicas, "serviceName": "demo-peer",
                    "selector": {"matchLabels": {}}, "template": {}}})
}

pub fn pvc_list(ordinals: &[u32]) -> Value {
    let items: Vec<Value> = ordinals
        .iter()
        .map(|o| json!({"metadata": {"name": format!("data-demo-{o}"), "namespace": "prod"}}))
        .collect();
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {}, "items": items})
}

/// The requests every Apply reconcile starts with: the Services, the
/// StatefulSet read, the disruption budget sized by it, the StatefulSet
/// re-applied at its current size, the volumes listed.
pub fn preamble(sts: Option<i32>, volumes: &[u32]) -> Vec<Expect> {
    vec![
        expect(
            "PATCH",
            format!("{NS}/services/demo-peer{APPLY_QUERY}"),
            Reply::Echo,
        ),
        expect(
            "PATCH",
            format!("{NS}/services/demo{APPLY_QUERY}"),
            Reply::Echo,
        ),
        expect(
            "GET",
            format!("{APPS}/statefulsets/demo"),
            sts.map_or(Reply::NotFound, |r| Reply::Json(sts_json(r))),
        ),
        expect(
            "PATCH",
            format!("/apis/policy/v1/namespaces/prod/poddisruptionbudgets/demo{APPLY_QUERY}"),
            Reply::Echo,
        ),
        expect(
            "PATCH",
            format!("{APPS}/statefulsets/demo{APPLY_QUERY}"),
            Reply::Echo,
        ),
        expect(
            "GET",
            format!("{NS}/persistentvolumeclaims"),
            Reply::Json(pvc_list(volumes)),
        ),
    ]
}

/// The pods list a reconcile makes while solo recovery is requested (their
/// readiness), answered with pods 0..3 of which `ready` are Ready (and the
/// others not, both since long ago).
pub fn pods_list(ready: &[u32]) -> Expect {
    let pods: Vec<(bool, Option<&str>)> = (0..3).map(|o| (ready.contains(&o), None)).collect();
    pod_list(&pods)
}

/// A pods list answering with pod `demo-N` for each entry: Ready or not
/// (since long ago), and from template revision `revision` when given.
pub fn pod_list(pods: &[(bool, Option<&str>)]) -> Expect {
    let items: Vec<Value> = pods
        .iter()
        .enumerate()
        .map(|(o, (ready, revision))| {
            let mut metadata = json!({"name": format!("demo-{o}"), "namespace": "prod"});
            if let Some(revision) = revision {
                metadata["labels"] = json!({"controller-revision-hash": revision});
            }
            let status = if *ready { "True" } else { "False" };
            json!({"metadata": metadata,
                   "status": {"conditions": [{"type": "Ready", "status": status,
                                              "lastTransitionTime": "2020-01-01T00:00:00Z"}]}})
        })
        .collect();
    expect(
        "GET",
        format!("{NS}/pods"),
        Reply::Json(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})),
    )
}

/// The status patch, answered with the object (as the API server does).
pub fn status_patch(rc: &RaftCluster) -> Expect {
    expect(
        "PATCH",
        format!("{RC}/status"),
        Reply::Json(serde_json::to_value(rc).unwrap()),
    )
}

pub async fn run(
    rc: RaftCluster,
    fake: FakeMembers,
    script: Vec<Expect>,
) -> (Action, Vec<Seen>, Vec<Step>) {
    run_with(rc, fake, script, |_| {}).await
}

/// [`run`], then `check` what the fake members were asked.
///
/// A reconcile that gets to its phases (the finalizer is on, no deletion)
/// first reads the RaftCluster afresh: that read is answered with `rc` and
/// left out of what is returned, so `script` and the indices into the
/// returned requests start at the first phase.
pub async fn run_with(
    rc: RaftCluster,
    fake: FakeMembers,
    mut script: Vec<Expect>,
    check: impl FnOnce(&FakeMembers),
) -> (Action, Vec<Seen>, Vec<Step>) {
    let applies = rc.metadata.deletion_timestamp.is_none()
        && rc
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == FINALIZER));
    if applies {
        let current = Reply::Json(serde_json::to_value(&rc).unwrap());
        script.insert(0, expect("GET", RC, current));
    }
    let (client, handle) = mock_client();
    let server = serve(handle, script);
    let ctx = Arc::new(Context {
        client,
        members: fake,
        reporter: Reporter {
            controller: "raftkv-operator".into(),
            instance: Some("test".into()),
        },
        metrics: Arc::new(Metrics::default()),
    });
    let action = tokio::time::timeout(
        Duration::from_secs(10),
        reconcile(Arc::new(rc), ctx.clone()),
    )
    .await
    .expect("reconcile finished")
    .expect("reconcile succeeded");
    let mut seen = server.await.expect("server task");
    if applies {
        let read = seen.remove(0);
        assert_eq!(
            read.method, "GET",
            "the reconcile first reads the RaftCluster"
        );
    }
    check(&ctx.members);
    let executed = ctx.members.executed.lock().unwrap().clone();
    (action, seen, executed)
}

pub fn condition<'a>(status_patch: &'a Value, type_: &str) -> &'a Value {
    status_patch["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status_patch}"))
}
