//! A volume provisioner (stand-in for an external CSI / local-path provisioner).
//!
//! The real PV controller in kube-controller-manager binds claims and marks
//! released volumes; this stands in only for the external provisioner it waits
//! for. For each Pending PVC that the PV controller has annotated with
//! `volume.kubernetes.io/storage-provisioner: <ours>` (its StorageClass names our
//! provisioner, `--provisioner`, default `raftkv.io/local-directory`), it makes a
//! directory `STATE/volumes/pvc-<claim uid>` and a PersistentVolume of that name
//! with a `hostPath` source, the claim's request as capacity, its access modes,
//! the class's name and reclaim policy (default Delete) and a `claimRef`
//! pre-bound to the claim; the PV controller then binds the two. When one of
//! our PVs is `Released` and its policy is Delete, the directory and the PV are
//! deleted; Retain leaves both. Not done: capacity enforcement (a directory has
//! no size), volume expansion, `WaitForFirstConsumer` topology, block volumes.
//! It polls once a second instead of watching: simple, and fast enough here.

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PROVISIONER_ANNOTATIONS: &[&str] = &[
    "volume.kubernetes.io/storage-provisioner",
    "volume.beta.kubernetes.io/storage-provisioner",
];
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// Whether the PV controller asked `provisioner` to provision `pvc`.
pub fn wants_us(pvc: &PersistentVolumeClaim, provisioner: &str) -> bool {
    let pending = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_none_or(|p| p == "Pending");
    let unbound = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_none_or(str::is_empty);
    let asked = pvc.metadata.annotations.as_ref().is_some_and(|a| {
        PROVISIONER_ANNOTATIONS
            .iter()
            .any(|k| a.get(*k).map(String::as_str) == Some(provisioner))
    });
    pending && unbound && asked && pvc.metadata.deletion_timestamp.is_none()
}

/// The PV name for a claim: `pvc-<claim uid>`, as external provisioners name them.
pub fn pv_name(pvc: &PersistentVolumeClaim) -> Option<String> {
    pvc.metadata.uid.as_ref().map(|uid| format!("pvc-{uid}"))
}

/// The PersistentVolume that satisfies `pvc` from `class`, backed by `dir`.
pub fn build_pv(
    pvc: &PersistentVolumeClaim,
    class: Option<&StorageClass>,
    provisioner: &str,
    dir: &Path,
) -> Result<PersistentVolume, String> {
    let name = pv_name(pvc).ok_or("claim has no uid")?;
    let spec = pvc.spec.as_ref().ok_or("claim has no spec")?;
    if spec.volume_mode.as_deref() == Some("Block") {
        return Err("volumeMode Block is not supported by the directory provisioner".into());
    }
    let request = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .cloned()
        .ok_or("claim requests no storage")?;
    let class_name = spec
        .storage_class_name
        .clone()
        .or_else(|| class.and_then(|c| c.metadata.name.clone()));
    Ok(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY.to_string(),
                provisioner.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_string(), request)])),
            access_modes: spec.access_modes.clone(),
            storage_class_name: class_name,
            persistent_volume_reclaim_policy: Some(
                class
                    .and_then(|c| c.reclaim_policy.clone())
                    .unwrap_or_else(|| "Delete".to_string()),
            ),
            mount_options: class.and_then(|c| c.mount_options.clone()),
            volume_mode: Some("Filesystem".to_string()),
            host_path: Some(HostPathVolumeSource {
                path: dir.display().to_string(),
                type_: Some("DirectoryOrCreate".to_string()),
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".to_string()),
                kind: Some("PersistentVolumeClaim".to_string()),
                name: pvc.metadata.name.clone(),
                namespace: pvc.metadata.namespace.clone(),
                uid: pvc.metadata.uid.clone(),
                resource_version: pvc.metadata.resource_version.clone(),
                ..ObjectReference::default()
            }),
            ..PersistentVolumeSpec::default()
        }),
        ..PersistentVolume::default()
    })
}

/// Whether `pv` is ours, released, and to be deleted.
pub fn should_delete(pv: &PersistentVolume, provisioner: &str) -> bool {
    let ours = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROVISIONED_BY))
        .is_some_and(|p| p == provisioner);
    let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
    let delete = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        == Some("Delete");
    ours && released && delete && pv.metadata.deletion_timestamp.is_none()
}

/// The provisioner loop; runs until cancelled.
pub async fn run(client: Client, provisioner: String, volumes_dir: PathBuf) {
    loop {
        if let Err(err) = pass(&client, &provisioner, &volumes_dir).await {
            tracing::warn!("provisioner: {err:#}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn pass(client: &Client, provisioner: &str, volumes_dir: &Path) -> Result<()> {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let classes: Api<StorageClass> = Api::all(client.clone());
    let lp = ListParams::default();
    let existing = pvs.list(&lp).await.context("listing PVs")?.items;
    for pvc in claims.list(&lp).await.context("listing PVCs")?.items {
        if !wants_us(&pvc, provisioner) {
            continue;
        }
        let Some(name) = pv_name(&pvc) else { continue };
        if existing
            .iter()
            .any(|pv| pv.metadata.name.as_deref() == Some(&name))
        {
            continue;
        }
        let class = match pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone()) {
            Some(c) => classes.get_opt(&c).await.context("reading StorageClass")?,
            None => None,
        };
        let dir = volumes_dir.join(&name);
        let pv = match build_pv(&pvc, class.as_ref(), provisioner, &dir) {
            Ok(pv) => pv,
            Err(why) => {
                tracing::warn!(
                    "provisioner: cannot provision claim {}/{}: {why}",
                    pvc.metadata.namespace.as_deref().unwrap_or(""),
                    pvc.metadata.name.as_deref().unwrap_or("")
                );
                continue;
            }
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        pvs.create(&PostParams::default(), &pv)
            .await
            .with_context(|| format!("creating PV {name}"))?;
        tracing::info!(
            "provisioner: {name} for claim {}/{} at {}",
            pvc.metadata.namespace.as_deref().unwrap_or(""),
            pvc.metadata.name.as_deref().unwrap_or(""),
            dir.display()
        );
    }
    for pv in existing {
        if !should_delete(&pv, provisioner) {
            continue;
        }
        let Some(name) = pv.metadata.name.clone() else {
            continue;
        };
        let dir = pv
            .spec
            .as_ref()
            .and_then(|s| s.host_path.as_ref())
            .map(|h| PathBuf::from(&h.path));
        if let Some(dir) = dir.filter(|d| d.starts_with(volumes_dir)) {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
        }
        pvs.delete(&name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting PV {name}"))?;
        tracing::info!("provisioner: deleted released volume {name}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OURS: &str = "raftkv.io/local-directory";

    fn pvc(annotation: Option<&str>) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "data-rc-0", "namespace": "db", "uid": "1234", "resourceVersion": "9",
                         "annotations": annotation.map(|a| json!({"volume.kubernetes.io/storage-provisioner": a}))},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                     "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Pending"}
        }))
        .unwrap()
    }

    fn class(policy: Option<&str>) -> StorageClass {
        serde_json::from_value(
            json!({"metadata": {"name": "standard"}, "provisioner": OURS,
                                      "reclaimPolicy": policy}),
        )
        .unwrap()
    }

    #[test]
    fn only_claims_the_pv_controller_handed_to_us() {
        assert!(wants_us(&pvc(Some(OURS)), OURS));
        assert!(!wants_us(&pvc(Some("ebs.csi.aws.com")), OURS));
        assert!(!wants_us(&pvc(None), OURS));
        let mut bound = pvc(Some(OURS));
        bound.spec.as_mut().unwrap().volume_name = Some("pv-1".into());
        assert!(!wants_us(&bound, OURS));
    }

    #[test]
    fn pv_is_prebound_with_the_claims_size_and_class_policy() {
        let dir = Path::new("/state/volumes/pvc-1234");
        let pv = build_pv(&pvc(Some(OURS)), Some(&class(Some("Retain"))), OURS, dir).unwrap();
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-1234"));
        assert_eq!(
            pv.metadata.annotations.as_ref().unwrap()[PROVISIONED_BY],
            OURS
        );
        let spec = pv.spec.unwrap();
        assert_eq!(spec.capacity.unwrap()["storage"].0, "1Gi");
        assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOnce"]);
        assert_eq!(spec.storage_class_name.as_deref(), Some("standard"));
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        assert_eq!(spec.host_path.unwrap().path, "/state/volumes/pvc-1234");
        let claim = spec.claim_ref.unwrap();
        assert_eq!(
            (
                claim.name.as_deref(),
                claim.namespace.as_deref(),
                claim.uid.as_deref()
            ),
            (Some("data-rc-0"), Some("db"), Some("1234"))
        );
        let pv = build_pv(&pvc(Some(OURS)), Some(&class(None)), OURS, dir).unwrap();
        assert_eq!(
            pv.spec.unwrap().persistent_volume_reclaim_policy.as_deref(),
            Some("Delete")
        );
        let mut no_size = pvc(Some(OURS));
        no_size.spec.as_mut().unwrap().resources = None;
        assert!(build_pv(&no_size, None, OURS, dir)
            .unwrap_err()
            .contains("storage"));
    }

    #[test]
    fn deletes_only_our_released_delete_policy_volumes() {
        let dir = Path::new("/v/pvc-1234");
        let mut pv = build_pv(&pvc(Some(OURS)), Some(&class(None)), OURS, dir).unwrap();
        assert!(!should_delete(&pv, OURS));
        pv.status = Some(serde_json::from_value(json!({"phase": "Released"})).unwrap());
        assert!(should_delete(&pv, OURS));
        assert!(!should_delete(&pv, "other.io/x"));
        pv.spec.as_mut().unwrap().persistent_volume_reclaim_policy = Some("Retain".into());
        assert!(!should_delete(&pv, OURS));
    }
}
