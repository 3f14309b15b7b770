//! Pod volumes as host directories (stand-in for the kubelet's volume manager).
//!
//! Each volume becomes a host path that containers bind-mount at their
//! `volumeMount`s (see `sandbox.rs`), with `readOnly` and `subPath` honoured:
//!
//! - `persistentVolumeClaim`: waits until the claim is Bound, then uses the
//!   bound PV's `hostPath` or `local` path (what `provisioner.rs` makes);
//! - `emptyDir`: `STATE/pods/NS_NAME/volumes/NAME`, deleted with the pod
//!   (`medium: Memory` is a plain directory too);
//! - `configMap`, `secret`, `downwardAPI` and `projected` (serviceAccountToken,
//!   configMap, secret, downwardAPI sources): files written from the API objects,
//!   `items` honoured, rewritten every refresh by rename inside the directory
//!   (which a bind mount of the directory sees). Service-account tokens come from
//!   the TokenRequest API bound to the pod (`boundObjectRef`), with the source's
//!   audience and expirationSeconds, and are renewed at 80 % of their lifetime,
//!   as the kubelet does. So the pod authenticates as its own ServiceAccount.
//! - `hostPath`: the path itself (`DirectoryOrCreate` / `FileOrCreate` create it).
//!
//! Not done: file modes and ownership (`defaultMode`, `fsGroup`), size limits,
//! other volume types (CSI, NFS, ephemeral, ...): a pod that uses one gets a
//! status naming the unsupported type.

use super::command::StartError;
use super::env::{field_value, PodFacts};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod,
    Secret, ServiceAccount, Volume,
};
use kube::api::PostParams;
use kube::{Api, Client};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The host paths of a pod's volumes, and when each token is due for renewal.
pub struct PodVolumes {
    dir: PathBuf,
    pub paths: BTreeMap<String, PathBuf>,
    token_due: HashMap<PathBuf, Instant>,
}

fn waiting(reason: &str, message: String) -> StartError {
    StartError::new(reason, message)
}

fn unsupported(message: String) -> StartError {
    StartError::new("CreateContainerConfigError", message)
}

fn io_err(what: &Path, e: std::io::Error) -> StartError {
    StartError::new("CreateContainerError", format!("{}: {e}", what.display()))
}

/// Write `content` to `dir/rel` by rename, creating parents.
fn write_file(dir: &Path, rel: &str, content: &[u8]) -> Result<(), StartError> {
    if rel.split('/').any(|c| c == "..") || rel.starts_with('/') {
        return Err(unsupported(format!(
            "volume item path {rel:?} escapes the volume"
        )));
    }
    let path = dir.join(rel);
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    if std::fs::read(&path).ok().as_deref() == Some(content) {
        return Ok(());
    }
    let tmp = parent.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&tmp, content).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))
}

/// Key -> file path selection (`items`, or every key).
fn select(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    what: &str,
) -> Result<Vec<(String, Vec<u8>)>, StartError> {
    match items {
        None => Ok(data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Some(items) => items
            .iter()
            .map(|i| {
                data.get(&i.key)
                    .map(|v| (i.path.clone(), v.clone()))
                    .ok_or_else(|| {
                        waiting(
                            "CreateContainerConfigError",
                            format!("{what} has no key {:?}", i.key),
                        )
                    })
            })
            .collect(),
    }
}

/// Writes the selected keys of a ConfigMap's or Secret's `data` into `dir`;
/// a missing object is fine only when the volume says it is optional.
fn write_selected(
    dir: &Path,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&Vec<KeyToPath>>,
    optional: Option<bool>,
    what: &str,
) -> Result<(), StartError> {
    match data {
        Some(data) => {
            for (rel, content) in select(&data, items, what)? {
                write_file(dir, &rel, &content)?;
            }
            Ok(())
        }
        None if optional == Some(true) => Ok(()),
        None => Err(waiting("ContainerCreating", format!("{what} not found"))),
    }
}

async fn config_map_data(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, StartError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = api.get_opt(name).await.map_err(|e| {
        waiting(
            "ContainerCreating",
            format!("reading configmap {name:?}: {e}"),
        )
    })?;
    Ok(cm.map(|cm| {
        let mut data: BTreeMap<String, Vec<u8>> = cm
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        data.extend(
            cm.binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0)),
        );
        data
    }))
}

async fn secret_data(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, StartError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s = api
        .get_opt(name)
        .await
        .map_err(|e| waiting("ContainerCreating", format!("reading secret {name:?}: {e}")))?;
    Ok(s.map(|s| {
        let mut data: BTreeMap<String, Vec<u8>> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        data.extend(
            s.string_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes())),
        );
        data
    }))
}

fn downward_files(
    pod: &Pod,
    facts: &PodFacts,
    items: &[DownwardAPIVolumeFile],
) -> Result<Vec<(String, Vec<u8>)>, StartError> {
    items
        .iter()
        .map(|item| {
            if item.resource_field_ref.is_some() {
                return Err(unsupported(format!(
                    "downwardAPI item {:?}: resourceFieldRef is not supported by the raftkv kubelet stand-in",
                    item.path
                )));
            }
            let field = item.field_ref.as_ref().ok_or_else(|| {
                unsupported(format!("downwardAPI item {:?} has no fieldRef", item.path))
            })?;
            let value = match field.field_path.as_str() {
                "metadata.labels" | "metadata.annotations" => {
                    let map = if field.field_path == "metadata.labels" {
                        &pod.metadata.labels
                    } else {
                        &pod.metadata.annotations
                    };
                    map.iter()
                        .flatten()
                        .map(|(k, v)| format!("{k}={v:?}\n"))
                        .collect::<String>()
                }
                path => field_value(pod, facts, path)?,
            };
            Ok((item.path.clone(), value.into_bytes()))
        })
        .collect()
}

impl PodVolumes {
    pub fn new(pod_dir: &Path) -> PodVolumes {
        PodVolumes {
            dir: pod_dir.join("volumes"),
            paths: BTreeMap::new(),
            token_due: HashMap::new(),
        }
    }

    /// Make (or refresh) every volume of `pod`. Errors name what is missing or
    /// unsupported; calling again retries.
    pub async fn prepare(
        &mut self,
        client: &Client,
        pod: &Pod,
        facts: &PodFacts,
    ) -> Result<(), StartError> {
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        for volume in &volumes {
            let path = self.prepare_one(client, pod, facts, volume).await?;
            self.paths.insert(volume.name.clone(), path);
        }
        Ok(())
    }

    async fn prepare_one(
        &mut self,
        client: &Client,
        pod: &Pod,
        facts: &PodFacts,
        v: &Volume,
    ) -> Result<PathBuf, StartError> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let own = self.dir.join(&v.name);
        let mkdir = |p: &Path| std::fs::create_dir_all(p).map_err(|e| io_err(p, e));
        if v.empty_dir.is_some() {
            mkdir(&own)?;
            return Ok(own);
        }
        if let Some(claim) = &v.persistent_volume_claim {
            if let Some(path) = self.paths.get(&v.name) {
                return Ok(path.clone());
            }
            return claim_path(client, &ns, &claim.claim_name).await;
        }
        if let Some(hp) = &v.host_path {
            let path = PathBuf::from(&hp.path);
            match hp.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => mkdir(&path)?,
                "FileOrCreate" if !path.exists() => {
                    if let Some(parent) = path.parent() {
                        mkdir(parent)?;
                    }
                    std::fs::write(&path, b"").map_err(|e| io_err(&path, e))?;
                }
                _ if !path.exists() => {
                    return Err(waiting(
                        "ContainerCreating",
                        format!("hostPath {} does not exist", path.display()),
                    ))
                }
                _ => {}
            }
            return Ok(path);
        }
        if let Some(cm) = &v.config_map {
            mkdir(&own)?;
            let data = config_map_data(client, &ns, &cm.name).await?;
            let what = format!("configmap {:?}", cm.name);
            write_selected(&own, data, cm.items.as_ref(), cm.optional, &what)?;
            return Ok(own);
        }
        if let Some(s) = &v.secret {
            mkdir(&own)?;
            let name = s.secret_name.clone().unwrap_or_default();
            let data = secret_data(client, &ns, &name).await?;
            let what = format!("secret {name:?}");
            write_selected(&own, data, s.items.as_ref(), s.optional, &what)?;
            return Ok(own);
        }
        if let Some(d) = &v.downward_api {
            mkdir(&own)?;
            for (rel, content) in downward_files(pod, facts, d.items.as_deref().unwrap_or(&[]))? {
                write_file(&own, &rel, &content)?;
            }
            return Ok(own);
        }
        if let Some(p) = &v.projected {
            mkdir(&own)?;
            for source in p.sources.iter().flatten() {
                if let Some(t) = &source.service_account_token {
                    self.token(
                        client,
                        pod,
                        &own,
                        t.path.as_str(),
                        t.audience.clone(),
                        t.expiration_seconds,
                    )
                    .await?;
                } else if let Some(cm) = &source.config_map {
                    let data = config_map_data(client, &ns, &cm.name).await?;
                    let what = format!("configmap {:?}", cm.name);
                    write_selected(&own, data, cm.items.as_ref(), cm.optional, &what)?;
                } else if let Some(s) = &source.secret {
                    let data = secret_data(client, &ns, &s.name).await?;
                    let what = format!("secret {:?}", s.name);
                    write_selected(&own, data, s.items.as_ref(), s.optional, &what)?;
                } else if let Some(d) = &source.downward_api {
                    for (rel, content) in
                        downward_files(pod, facts, d.items.as_deref().unwrap_or(&[]))?
                    {
                        write_file(&own, &rel, &content)?;
                    }
                } else {
                    return Err(unsupported(format!(
                        "volume {:?}: a projected source other than serviceAccountToken, configMap, secret or downwardAPI is not supported by the raftkv kubelet stand-in",
                        v.name
                    )));
                }
            }
            return Ok(own);
        }
        Err(unsupported(format!(
            "volume {:?}: this volume type is not supported by the raftkv kubelet stand-in (supported: persistentVolumeClaim, emptyDir, configMap, secret, downwardAPI, projected, hostPath)",
            v.name
        )))
    }

    /// Request (or renew, when due) a token bound to the pod into `dir/rel`.
    async fn token(
        &mut self,
        client: &Client,
        pod: &Pod,
        dir: &Path,
        rel: &str,
        audience: Option<String>,
        expiration: Option<i64>,
    ) -> Result<(), StartError> {
        let path = dir.join(rel);
        if self
            .token_due
            .get(&path)
            .is_some_and(|due| Instant::now() < *due)
            && path.exists()
        {
            return Ok(());
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_string());
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audience.into_iter().filter(|a| !a.is_empty()).collect(),
                expiration_seconds: Some(expiration.unwrap_or(3600)),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".to_string()),
                    kind: Some("Pod".to_string()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..TokenRequest::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        let answer = api
            .create_token_request(&sa, &PostParams::default(), &request)
            .await
            .map_err(|e| {
                waiting(
                    "ContainerCreating",
                    format!("TokenRequest for serviceaccount {ns}/{sa}: {e}"),
                )
            })?;
        let status = answer.status.ok_or_else(|| {
            waiting(
                "ContainerCreating",
                format!("TokenRequest for {ns}/{sa} returned no token"),
            )
        })?;
        write_file(dir, rel, status.token.as_bytes())?;
        let lifetime = status
            .expiration_timestamp
            .0
            .duration_since(k8s_openapi::jiff::Timestamp::now())
            .as_secs()
            .max(10) as u64;
        self.token_due.insert(
            path,
            Instant::now() + Duration::from_secs(lifetime * 8 / 10),
        );
        Ok(())
    }

    /// The host directory of the pod's volumes (removed with the pod).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The host path of a bound claim's volume.
async fn claim_path(client: &Client, ns: &str, claim: &str) -> Result<PathBuf, StartError> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvc = claims
        .get_opt(claim)
        .await
        .map_err(|e| waiting("ContainerCreating", format!("reading claim {claim:?}: {e}")))?
        .ok_or_else(|| {
            waiting(
                "ContainerCreating",
                format!("persistentvolumeclaim {claim:?} not found"),
            )
        })?;
    let phase = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let volume = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != "Bound" || volume.is_empty() {
        return Err(waiting(
            "ContainerCreating",
            format!("waiting for persistentvolumeclaim {claim:?} to be bound (phase {phase:?})"),
        ));
    }
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs.get(&volume).await.map_err(|e| {
        waiting(
            "ContainerCreating",
            format!("reading persistentvolume {volume:?}: {e}"),
        )
    })?;
    let spec = pv.spec.unwrap_or_default();
    let path = spec
        .host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .ok_or_else(|| {
            unsupported(format!(
                "persistentvolume {volume:?} is neither hostPath nor local; the raftkv kubelet stand-in mounts only directories"
            ))
        })?;
    let path = PathBuf::from(path);
    std::fs::create_dir_all(&path).map_err(|e| io_err(&path, e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_select_keys_and_files_are_written_by_rename() {
        let data = BTreeMap::from([
            ("ca.crt".to_string(), b"CERT".to_vec()),
            ("other".to_string(), b"x".to_vec()),
        ]);
        assert_eq!(select(&data, None, "cm").unwrap().len(), 2);
        let items = vec![KeyToPath {
            key: "ca.crt".into(),
            path: "certs/ca.crt".into(),
            mode: None,
        }];
        assert_eq!(
            select(&data, Some(&items), "cm").unwrap(),
            [("certs/ca.crt".to_string(), b"CERT".to_vec())]
        );
        let missing = vec![KeyToPath {
            key: "nope".into(),
            path: "n".into(),
            mode: None,
        }];
        assert!(select(&data, Some(&missing), "cm")
            .unwrap_err()
            .message
            .contains("nope"));

        let dir = tempfile::tempdir().unwrap();
        write_file(dir.path(), "certs/ca.crt", b"CERT").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("certs/ca.crt")).unwrap(),
            b"CERT"
        );
        assert!(write_file(dir.path(), "../escape", b"x").is_err());
    }

    #[test]
    fn downward_api_files() {
        let pod = super::super::env::tests::fixture_pod();
        let facts = super::super::env::tests::facts();
        let items: Vec<DownwardAPIVolumeFile> = serde_json::from_value(serde_json::json!([
            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}},
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}
        ]))
        .unwrap();
        let files = downward_files(&pod, &facts, &items).unwrap();
        assert_eq!(files[0], ("namespace".to_string(), b"db".to_vec()));
        assert_eq!(
            files[1],
            ("labels".to_string(), b"app=\"raftkv\"\n".to_vec())
        );
        let cpu: Vec<DownwardAPIVolumeFile> = serde_json::from_value(serde_json::json!([
            {"path": "cpu", "resourceFieldRef": {"resource": "limits.cpu"}}
        ]))
        .unwrap();
        assert!(downward_files(&pod, &facts, &cpu)
            .unwrap_err()
            .message
            .contains("resourceFieldRef"));
    }
}
