//! A container's environment, as the kubelet builds it (stand-in).
//!
//! Resolved here: plain values with `$(VAR)` expansion, `valueFrom.fieldRef`
//! (metadata.name/namespace/uid, spec.nodeName, spec.serviceAccountName,
//! status.podIP, status.hostIP, metadata.labels['k'], metadata.annotations['k']),
//! `configMapKeyRef`, `secretKeyRef` (honouring `optional`), `envFrom` of
//! ConfigMaps and Secrets with `prefix`, the `KUBERNETES_SERVICE_*` /
//! `KUBERNETES_PORT*` variables that point in-cluster clients at the API server,
//! `HOSTNAME` and `PATH`. Not done: `resourceFieldRef` (the container gets a
//! CreateContainerConfigError status naming it) and the docker-link variables
//! of other Services (`enableServiceLinks`), which nothing here needs.
//!
//! The API objects are fetched first ([`referenced_objects`] names them), so
//! resolution itself is a pure function that tests check.

use super::command::{expand, StartError};
use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::BTreeMap;

/// The fetched ConfigMaps and Secrets of the pod's namespace, by name: `None`
/// means the object does not exist.
#[derive(Default, Debug, Clone)]
pub struct Lookups {
    pub config_maps: BTreeMap<String, Option<BTreeMap<String, String>>>,
    pub secrets: BTreeMap<String, Option<BTreeMap<String, String>>>,
}

/// What the pod is and where: the dynamic parts of the environment.
#[derive(Debug, Clone)]
pub struct PodFacts {
    pub pod_ip: String,
    pub host_ip: String,
    /// The API server as pods reach it, `IP:PORT`.
    pub api_server: String,
    pub path: String,
    pub hostname: String,
}

/// ConfigMap and Secret names a container's env refers to: (config maps, secrets).
pub fn referenced_objects(container: &Container) -> (Vec<String>, Vec<String>) {
    let mut cms = Vec::new();
    let mut secrets = Vec::new();
    for var in container.env.iter().flatten() {
        if let Some(from) = &var.value_from {
            if let Some(r) = &from.config_map_key_ref {
                cms.push(r.name.clone());
            }
            if let Some(r) = &from.secret_key_ref {
                secrets.push(r.name.clone());
            }
        }
    }
    for from in container.env_from.iter().flatten() {
        if let Some(r) = &from.config_map_ref {
            cms.push(r.name.clone());
        }
        if let Some(r) = &from.secret_ref {
            secrets.push(r.name.clone());
        }
    }
    (cms, secrets)
}

/// The value of a downward-API field path, or why it is unsupported.
pub fn field_value(pod: &Pod, facts: &PodFacts, path: &str) -> Result<String, StartError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let from_map = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default()
    };
    let bracket_key = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['"))
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_string()),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        _ => {
            if let Some(key) = bracket_key("metadata.labels") {
                from_map(&meta.labels, &key)
            } else if let Some(key) = bracket_key("metadata.annotations") {
                from_map(&meta.annotations, &key)
            } else {
                return Err(StartError::new(
                    "CreateContainerConfigError",
                    format!("fieldRef {path:?} is not supported by the raftkv kubelet stand-in"),
                ));
            }
        }
    })
}

/// The variables every container gets before its own `env`.
pub fn base_env(facts: &PodFacts) -> Vec<(String, String)> {
    let (host, port) = facts
        .api_server
        .rsplit_once(':')
        .unwrap_or((facts.api_server.as_str(), "443"));
    let tcp = format!("tcp://{host}:{port}");
    vec![
        ("PATH".into(), facts.path.clone()),
        ("HOSTNAME".into(), facts.hostname.clone()),
        ("KUBERNETES_SERVICE_HOST".into(), host.to_string()),
        ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
        ("KUBERNETES_PORT".into(), tcp.clone()),
        (format!("KUBERNETES_PORT_{port}_TCP"), tcp),
        (format!("KUBERNETES_PORT_{port}_TCP_PROTO"), "tcp".into()),
        (format!("KUBERNETES_PORT_{port}_TCP_PORT"), port.to_string()),
        (format!("KUBERNETES_PORT_{port}_TCP_ADDR"), host.to_string()),
    ]
}

fn set(env: &mut Vec<(String, String)>, name: String, value: String) {
    env.retain(|(k, _)| *k != name);
    env.push((name, value));
}

/// The whole environment of `container`, in definition order (later wins).
pub fn resolve_env(
    pod: &Pod,
    container: &Container,
    facts: &PodFacts,
    lookups: &Lookups,
) -> Result<Vec<(String, String)>, StartError> {
    let config_error = |msg: String| StartError::new("CreateContainerConfigError", msg);
    let mut env = base_env(facts);
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, name, optional, data) = if let Some(r) = &from.config_map_ref {
            let data = lookups.config_maps.get(&r.name).cloned().flatten();
            ("configmap", &r.name, r.optional.unwrap_or(false), data)
        } else if let Some(r) = &from.secret_ref {
            let data = lookups.secrets.get(&r.name).cloned().flatten();
            ("secret", &r.name, r.optional.unwrap_or(false), data)
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    set(&mut env, format!("{prefix}{k}"), v);
                }
            }
            None if optional => {}
            None => return Err(config_error(format!("{kind} {name:?} not found"))),
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => expand(var.value.as_deref().unwrap_or(""), &env),
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    field_value(pod, facts, &f.field_path)?
                } else if let Some(r) = &from.config_map_key_ref {
                    let value = lookups
                        .config_maps
                        .get(&r.name)
                        .cloned()
                        .flatten()
                        .and_then(|d| d.get(&r.key).cloned());
                    match value {
                        Some(v) => v,
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(config_error(format!(
                                "env {}: configmap {:?} key {:?} not found",
                                var.name, r.name, r.key
                            )))
                        }
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let value = lookups
                        .secrets
                        .get(&r.name)
                        .cloned()
                        .flatten()
                        .and_then(|d| d.get(&r.key).cloned());
                    match value {
                        Some(v) => v,
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(config_error(format!(
                                "env {}: secret {:?} key {:?} not found",
                                var.name, r.name, r.key
                            )))
                        }
                    }
                } else if from.resource_field_ref.is_some() {
                    return Err(config_error(format!(
                        "env {}: resourceFieldRef is not supported by the raftkv kubelet stand-in",
                        var.name
                    )));
                } else {
                    return Err(config_error(format!(
                        "env {}: unsupported valueFrom",
                        var.name
                    )));
                }
            }
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn fixture_pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "rc-1", "namespace": "db", "uid": "u-1",
                          "labels": {"app": "raftkv"}},
            "spec": {
                "nodeName": "node-a",
                "serviceAccountName": "raftkv",
                "containers": [{
                    "name": "raftkv",
                    "image": "ghcr.io/x/raftkv:1",
                    "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
                    "env": [
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                        {"name": "URL", "value": "http://$(POD_IP):2379"},
                        {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                        {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": true}}}
                    ]
                }]
            }
        }))
        .unwrap()
    }

    pub(crate) fn facts() -> PodFacts {
        PodFacts {
            pod_ip: "10.213.0.7".into(),
            host_ip: "10.213.0.1".into(),
            api_server: "10.213.0.1:6443".into(),
            path: "/b:/bin".into(),
            hostname: "rc-1".into(),
        }
    }

    fn lookups() -> Lookups {
        let mut l = Lookups::default();
        l.config_maps.insert(
            "settings".into(),
            Some(BTreeMap::from([("level".into(), "debug".into())])),
        );
        l.config_maps.insert("nope".into(), None);
        l.secrets.insert(
            "creds".into(),
            Some(BTreeMap::from([("password".into(), "s3cret".into())])),
        );
        l
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn env_resolves_fields_refs_and_expansion() {
        let pod = fixture_pod();
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let (cms, secrets) = referenced_objects(c);
        assert_eq!(cms, ["nope", "settings"]);
        assert_eq!(secrets, ["creds"]);
        let env = resolve_env(&pod, c, &facts(), &lookups()).unwrap();
        assert_eq!(get(&env, "POD_NAME"), Some("rc-1"));
        assert_eq!(get(&env, "POD_IP"), Some("10.213.0.7"));
        assert_eq!(get(&env, "APP"), Some("raftkv"));
        assert_eq!(get(&env, "URL"), Some("http://10.213.0.7:2379"));
        assert_eq!(get(&env, "PASS"), Some("s3cret"));
        assert_eq!(get(&env, "CFG_level"), Some("debug"));
        assert_eq!(get(&env, "OPT"), None);
        assert_eq!(get(&env, "KUBERNETES_SERVICE_HOST"), Some("10.213.0.1"));
        assert_eq!(get(&env, "KUBERNETES_SERVICE_PORT"), Some("6443"));
        assert_eq!(
            get(&env, "KUBERNETES_PORT_6443_TCP"),
            Some("tcp://10.213.0.1:6443")
        );
    }

    #[test]
    fn missing_objects_and_unsupported_fields_are_clear_errors() {
        let pod = fixture_pod();
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let mut l = lookups();
        l.secrets.insert("creds".into(), None);
        let err = resolve_env(&pod, c, &facts(), &l).unwrap_err();
        assert_eq!(err.reason, "CreateContainerConfigError");
        assert!(err.message.contains("\"creds\""), "{}", err.message);

        let mut c = c.clone();
        c.env_from = None;
        c.env = Some(vec![serde_json::from_value(json!({"name": "CPU",
            "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}))
        .unwrap()]);
        let err = resolve_env(&pod, &c, &facts(), &lookups()).unwrap_err();
        assert!(err.message.contains("resourceFieldRef"), "{}", err.message);
        let err = field_value(&pod, &facts(), "status.phase").unwrap_err();
        assert!(err.message.contains("status.phase"));
    }
}
