//! Volume expansion (stand-in for a CSI driver's external-resizer, and for the
//! kubelet's online filesystem expansion).
//!
//! On a real cluster, raising a bound claim's `spec.resources.requests.storage`
//! (which the API server's `PersistentVolumeClaimResize` admission allows only
//! when the claim's StorageClass has `allowVolumeExpansion: true`) makes the
//! resizer grow the volume and set the PV's capacity, and then the kubelet grows
//! the filesystem and sets the claim's `status.capacity`. Here a volume is a
//! directory with no size, so both happen at once: for each bound claim on one
//! of our PVs whose request differs from its `status.capacity`, the PV's
//! `spec.capacity` and then the claim's `status.capacity` are set to the
//! request. Not done: the `Resizing` / `FileSystemResizePending` conditions in
//! between, `status.allocatedResources`, offline (pod restart) expansion.
//! It polls once a second, like the provisioner.

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use std::time::Duration;

const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// The claim's bound volume and the size it asks for, when that differs from
/// the capacity it reports.
pub fn wants_expansion(pvc: &PersistentVolumeClaim) -> Option<(String, String)> {
    let volume = pvc.spec.as_ref()?.volume_name.clone()?;
    let request = pvc
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?
        .0
        .clone();
    let status = pvc.status.as_ref()?;
    if status.phase.as_deref() != Some("Bound") {
        return None;
    }
    let capacity = status.capacity.as_ref()?.get("storage")?.0.clone();
    (capacity != request && !volume.is_empty()).then_some((volume, request))
}

/// The resizer loop; runs until cancelled.
pub async fn run(client: Client, provisioner: String) {
    loop {
        if let Err(err) = pass(&client, &provisioner).await {
            tracing::warn!("resizer: {err:#}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn pass(client: &Client, provisioner: &str) -> Result<()> {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let params = PatchParams::default();
    for pvc in claims
        .list(&ListParams::default())
        .await
        .context("listing PVCs")?
        .items
    {
        let Some((volume, request)) = wants_expansion(&pvc) else {
            continue;
        };
        let ours = pvs
            .get_opt(&volume)
            .await
            .context("reading PV")?
            .and_then(|pv| pv.metadata.annotations?.get(PROVISIONED_BY).cloned())
            .is_some_and(|by| by == provisioner);
        if !ours {
            continue;
        }
        let capacity = json!({ "storage": request });
        pvs.patch(
            &volume,
            &params,
            &Patch::Merge(json!({ "spec": { "capacity": capacity } })),
        )
        .await
        .with_context(|| format!("expanding PV {volume}"))?;
        let (ns, name) = (
            pvc.metadata.namespace.clone().unwrap_or_default(),
            pvc.metadata.name.clone().unwrap_or_default(),
        );
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
            .patch_status(
                &name,
                &params,
                &Patch::Merge(json!({ "status": { "capacity": capacity } })),
            )
            .await
            .with_context(|| format!("setting the capacity of claim {ns}/{name}"))?;
        tracing::info!("resizer: {volume} (claim {ns}/{name}) expanded to {request}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::wants_expansion;
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use serde_json::json;

    fn claim(phase: &str, request: &str, capacity: &str) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "data-demo-0", "namespace": "prod"},
            "spec": {"volumeName": "pvc-1", "resources": {"requests": {"storage": request}}},
            "status": {"phase": phase, "capacity": {"storage": capacity}},
        }))
        .unwrap()
    }

    #[test]
    fn only_bound_claims_asking_for_another_size_are_expanded() {
        assert_eq!(
            wants_expansion(&claim("Bound", "3Gi", "2Gi")),
            Some(("pvc-1".to_string(), "3Gi".to_string()))
        );
        assert_eq!(wants_expansion(&claim("Bound", "2Gi", "2Gi")), None);
        assert_eq!(wants_expansion(&claim("Pending", "3Gi", "2Gi")), None);
    }
}
