//! The Kubernetes calls a reconcile makes for one RaftCluster, in its
//! namespace: server-side apply of what it owns, reading the StatefulSet and
//! the volumes and the certificate Secrets, the deletes a member reset needs,
//! events, and status.
//! Every failure names the call that failed (see [`crate::Error::Kube`]).

use crate::crd::RaftCluster;
use crate::membership::PodState;
use crate::naming::{ClusterNames, DATA_VOLUME, MANAGER};
use crate::volumes::ClaimSize;
use crate::{kube_err, Error};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

/// The label the StatefulSet controller puts on each pod: the revision of
/// the template it was made from.
const REVISION_LABEL: &str = "controller-revision-hash";

/// One RaftCluster's objects, as the API server has them.
pub struct KubeOps {
    client: Client,
    names: ClusterNames,
    recorder: Recorder,
    reference: ObjectReference,
}

impl KubeOps {
    pub fn new(client: Client, reporter: Reporter, rc: &RaftCluster, names: ClusterNames) -> Self {
        KubeOps {
            recorder: Recorder::new(client.clone(), reporter),
            reference: rc.object_ref(&()),
            client,
            names,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.names.namespace)
    }

    /// Server-side apply of an owned object, as the operator's field manager.
    pub async fn apply<K>(&self, name: &str, obj: &K) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Serialize
            + DeserializeOwned
            + Debug,
    {
        self.api::<K>()
            .patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await
            .map_err(kube_err(format!("applying {} {name}", K::kind(&()))))?;
        Ok(())
    }

    /// The StatefulSet, if it exists.
    pub async fn statefulset(&self) -> Result<Option<StatefulSet>, Error> {
        self.api::<StatefulSet>()
            .get_opt(&self.names.statefulset())
            .await
            .map_err(kube_err("reading the StatefulSet"))
    }

    /// The Secret `name`, if it exists.
    pub async fn secret(&self, name: &str) -> Result<Option<Secret>, Error> {
        self.api::<Secret>()
            .get_opt(name)
            .await
            .map_err(kube_err(format!("reading the Secret {name}")))
    }

    /// The member volumes that exist and are not being deleted, by ordinal,
    /// with what each asks for and has.
    pub async fn data_claims(&self) -> Result<BTreeMap<u32, ClaimSize>, Error> {
        let claims = self
            .api::<PersistentVolumeClaim>()
            .list(&ListParams::default().labels(&self.names.selector_string()))
            .await
            .map_err(kube_err("listing volumes"))?;
        let prefix = format!("{DATA_VOLUME}-{}-", self.names.statefulset());
        let storage = |list: Option<&BTreeMap<String, Quantity>>| {
            list.and_then(|l| l.get("storage")).map(|q| q.0.clone())
        };
        Ok(claims
            .items
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .filter_map(|c| {
                let ordinal = c.name_any().strip_prefix(&prefix)?.parse::<u32>().ok()?;
                let size = ClaimSize {
                    requested: storage(
                        c.spec
                            .as_ref()
                            .and_then(|s| s.resources.as_ref())
                            .and_then(|r| r.requests.as_ref()),
                    ),
                    capacity: storage(c.status.as_ref().and_then(|s| s.capacity.as_ref())),
                };
                Some((ordinal, size))
            })
            .collect())
    }

    /// The member pods by ordinal: their template revision, readiness (and
    /// since when, as of `now`), and whether they are being deleted.
    pub async fn member_pods(&self, now: Timestamp) -> Result<BTreeMap<u32, PodState>, Error> {
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&self.names.selector_string()))
            .await
            .map_err(kube_err("listing pods"))?;
        let prefix = format!("{}-", self.names.statefulset());
        let state = |pod: &Pod| {
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
            let since = ready
                .and_then(|c| c.last_transition_time.as_ref())
                .or(pod.metadata.creation_timestamp.as_ref())
                .map(|t| t.0);
            PodState {
                revision: pod.labels().get(REVISION_LABEL).cloned(),
                ready: ready.is_some_and(|c| c.status == "True"),
                ready_for: since
                    .and_then(|since| Duration::try_from(now.duration_since(since)).ok())
                    .unwrap_or_default(),
                terminating: pod.metadata.deletion_timestamp.is_some(),
            }
        };
        Ok(pods
            .items
            .iter()
            .filter_map(|p| {
                let ordinal = p.name_any().strip_prefix(&prefix)?.parse::<u32>().ok()?;
                Some((ordinal, state(p)))
            })
            .collect())
    }

    /// Deletes the pod of `ordinal` (gone already is fine); the StatefulSet
    /// re-creates it from its current template.
    pub async fn delete_pod(&self, ordinal: u32) -> Result<(), Error> {
        self.delete::<Pod>(&self.names.pod(ordinal), "pod").await
    }

    /// Raises the data volume claim of `ordinal` to `size`; Kubernetes
    /// expands the volume where its StorageClass allows (else refuses).
    pub async fn expand_volume(&self, ordinal: u32, size: &str) -> Result<(), Error> {
        let name = self.names.pvc(ordinal);
        let patch = serde_json::json!({
            "spec": { "resources": { "requests": { "storage": size } } }
        });
        self.api::<PersistentVolumeClaim>()
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(kube_err(format!("expanding volume {name} to {size}")))?;
        Ok(())
    }

    /// Deletes the data volume of `ordinal` (gone already is fine).
    pub async fn delete_volume(&self, ordinal: u32) -> Result<(), Error> {
        let name = self.names.pvc(ordinal);
        self.delete::<PersistentVolumeClaim>(&name, "volume").await
    }

    /// Deletes a stale member's volume, then its pod: the StatefulSet re-creates
    /// the pod with a fresh, empty volume.
    pub async fn reset_member(&self, ordinal: u32) -> Result<(), Error> {
        self.delete_volume(ordinal).await?;
        self.delete_pod(ordinal).await
    }

    async fn delete<K>(&self, name: &str, what: &str) -> Result<(), Error>
    where
        K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
        K::DynamicType: Default,
    {
        match self.api::<K>().delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(source) => Err(Error::Kube {
                what: format!("deleting {what} {name}"),
                source,
            }),
        }
    }

    /// Publishes an event on the RaftCluster (best effort, see [`publish`]).
    pub async fn publish(&self, type_: EventType, reason: &str, note: String) {
        publish(&self.recorder, &self.reference, type_, reason, note).await;
    }

    /// Writes `status` as the RaftCluster's status, only over `read_version`
    /// (the resourceVersion the reconcile planned from): a newer write of
    /// anyone else's makes the API server refuse this one (409 Conflict, see
    /// [`Error::is_conflict`]) instead of being merged over, since status is
    /// the only record of recovery steps taken. It is a merge patch over
    /// `previous` (the status as read) that also removes what `status` no
    /// longer has (see [`replacing`]).
    pub async fn write_status<S: Serialize>(
        &self,
        previous: Option<&S>,
        status: &S,
        read_version: Option<&str>,
    ) -> Result<(), Error> {
        let to_json = |s: &S| serde_json::to_value(s).unwrap_or(serde_json::Value::Null);
        let status = match previous {
            Some(previous) => replacing(&to_json(previous), &to_json(status)),
            None => to_json(status),
        };
        let mut patch = serde_json::json!({ "status": status });
        if let Some(version) = read_version {
            patch["metadata"] = serde_json::json!({ "resourceVersion": version });
        }
        self.api::<RaftCluster>()
            .patch_status(
                &self.names.cluster,
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .map_err(kube_err("writing status"))?;
        Ok(())
    }
}

/// A JSON merge patch (RFC 7386) that turns `old` into `new`: `new` itself,
/// plus a `null` for every field of `old` that `new` lacks, at every depth
/// of objects both have. Status fields are left out when empty or unset
/// (`skip_serializing_if`), and a merge patch without them would keep the
/// old values: a pending learner long promoted, or the members an earlier
/// recovery reset, which made a new recovery skip resetting them.
pub fn replacing(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = new.clone();
            for (key, was) in old {
                let value = match new.get(key) {
                    None => Value::Null,
                    Some(now) => replacing(was, now),
                };
                patch.insert(key.clone(), value);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

/// The RaftCluster as the API server has it now (a quorum read), or None if
/// it is gone. The controller's watch cache can lag a status this operator
/// wrote a moment ago; a reconcile plans from this instead.
pub async fn read_current(client: &Client, rc: &RaftCluster) -> Result<Option<RaftCluster>, Error> {
    let ns = rc.namespace().unwrap_or_else(|| "default".to_string());
    Api::<RaftCluster>::namespaced(client.clone(), &ns)
        .get_opt(&rc.name_any())
        .await
        .map_err(kube_err("reading the RaftCluster"))
}

/// Events are for humans: failing to publish one must not fail the reconcile.
pub async fn publish(
    recorder: &Recorder,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: reason.to_string(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, reference).await {
        tracing::warn!(error = %err, reason, "publishing event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::replacing;
    use serde_json::json;

    #[test]
    fn a_merge_patch_removes_what_the_new_status_left_out() {
        let old = json!({
            "pendingLearner": {"id": 3},
            "recovery": {"phase": "Completed", "reset": [1, 2], "member": 0},
            "members": [{"id": 1}],
        });
        let new = json!({
            "recovery": {"phase": "ResettingOthers", "member": 0},
            "members": [{"id": 1}, {"id": 2}],
        });
        assert_eq!(
            replacing(&old, &new),
            json!({
                "pendingLearner": null,
                "recovery": {"phase": "ResettingOthers", "reset": null, "member": 0},
                "members": [{"id": 1}, {"id": 2}],
            })
        );
        assert_eq!(replacing(&json!(null), &new), new);
    }
}
