//! The generated CRD: up to date with the checked-in YAML, a structural schema
//! the API server accepts, the scale subresource wired to the right fields, and
//! the example manifests valid against it.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use raftkv_operator::crd::{crd_yaml, RaftCluster};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator/ has a parent")
        .to_path_buf()
}

const CHECKED_IN: &str = "crds/raftcluster.yaml";

#[test]
fn checked_in_crd_matches_the_generated_one() {
    let path = repo_root().join(CHECKED_IN);
    let generated = crd_yaml().expect("CRD serializes");
    if std::env::var_os("RAFTKV_UPDATE_CRDS").is_some() {
        std::fs::write(&path, &generated).expect("writing the CRD");
    }
    let on_disk = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(
        on_disk == generated,
        "{CHECKED_IN} is out of date: regenerate it with \
         `cargo run -p raftkv-operator -- crd > {CHECKED_IN}` \
         (or run this test with RAFTKV_UPDATE_CRDS=1)"
    );
}

fn open_api_schema() -> Value {
    let crd = RaftCluster::crd();
    let version = &crd.spec.versions[0];
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the CRD carries an openAPIV3Schema");
    serde_json::to_value(schema).expect("schema serializes")
}

/// Kubernetes' structural-schema rules (the ones a derived schema can break):
/// every node has a type unless it is int-or-string or preserves unknown
/// fields; no `$ref`; no type-bearing `oneOf`/`anyOf`/`allOf`/`not`;
/// `properties` and `additionalProperties` never together.
fn structural_violations(node: &Value, path: &str, out: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        out.push(format!("{path}: schema node is not an object"));
        return;
    };
    let exempt = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !exempt && !obj.contains_key("type") {
        out.push(format!("{path}: no type"));
    }
    for forbidden in ["$ref", "definitions", "$defs"] {
        if obj.contains_key(forbidden) {
            out.push(format!("{path}: has {forbidden}"));
        }
    }
    for junction in ["oneOf", "anyOf", "allOf", "not"] {
        if let Some(branches) = obj.get(junction) {
            let branches = branches
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![branches.clone()]);
            for b in branches {
                if b.get("type").is_some() || b.get("properties").is_some() {
                    out.push(format!("{path}: {junction} branch declares types"));
                }
            }
        }
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        out.push(format!("{path}: both properties and additionalProperties"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            structural_violations(child, &format!("{path}.{name}"), out);
        }
    }
    if let Some(items) = obj.get("items") {
        structural_violations(items, &format!("{path}[]"), out);
    }
    if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        structural_violations(extra, &format!("{path}{{}}"), out);
    }
}

#[test]
fn schema_is_structural() {
    let mut violations = Vec::new();
    structural_violations(&open_api_schema(), "", &mut violations);
    assert!(violations.is_empty(), "not structural: {violations:#?}");
}

#[test]
fn the_checker_rejects_a_schema_without_types() {
    // The structural check itself must be able to fail.
    let bad =
        serde_json::json!({"type": "object", "properties": {"x": {"description": "untyped"}}});
    let mut violations = Vec::new();
    structural_violations(&bad, "", &mut violations);
    assert_eq!(violations, vec![".x: no type".to_string()]);
}

#[test]
fn scale_subresource_points_at_replicas_and_selector() {
    let crd: CustomResourceDefinition = RaftCluster::crd();
    let version = &crd.spec.versions[0];
    let sub = version.subresources.as_ref().expect("subresources");
    assert!(sub.status.is_some(), "status subresource");
    let scale = sub.scale.as_ref().expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
    let columns: Vec<_> = version
        .additional_printer_columns
        .as_ref()
        .expect("printer columns")
        .iter()
        .map(|c| (c.name.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        vec![
            ("Replicas", ".spec.replicas"),
            ("Ready", ".status.readyReplicas"),
            ("Leader", ".status.leader"),
            ("Phase", ".status.phase"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
}

fn validator() -> jsonschema::Validator {
    jsonschema::draft4::new(&open_api_schema()).expect("the openAPIV3Schema compiles")
}

fn examples() -> Vec<(PathBuf, Value)> {
    let dir = repo_root().join("charts/examples");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("charts/examples exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable example");
        let doc: Value = serde_yaml::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
        found.push((path, doc));
    }
    found
}

#[test]
fn example_manifests_validate_against_the_crd_schema() {
    let examples = examples();
    assert!(!examples.is_empty(), "no charts/examples/*.yaml found");
    let validator = validator();
    for (path, doc) in examples {
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        // And the operator can read it.
        let rc: RaftCluster = serde_json::from_value(doc)
            .unwrap_or_else(|e| panic!("{}: not a RaftCluster: {e}", path.display()));
        assert!((1..=9).contains(&rc.spec.replicas));
    }
}

#[test]
fn out_of_range_replicas_and_missing_image_are_rejected() {
    let validator = validator();
    let too_many = serde_json::json!({
        "apiVersion": "raftkv.io/v1alpha1", "kind": "RaftCluster",
        "metadata": {"name": "x"}, "spec": {"replicas": 10, "image": "i"}
    });
    assert!(!validator.is_valid(&too_many), "replicas 10 accepted");
    let zero = serde_json::json!({
        "apiVersion": "raftkv.io/v1alpha1", "kind": "RaftCluster",
        "metadata": {"name": "x"}, "spec": {"replicas": 0, "image": "i"}
    });
    assert!(!validator.is_valid(&zero), "replicas 0 accepted");
    let no_image = serde_json::json!({
        "apiVersion": "raftkv.io/v1alpha1", "kind": "RaftCluster",
        "metadata": {"name": "x"}, "spec": {"replicas": 3}
    });
    assert!(!validator.is_valid(&no_image), "missing image accepted");
}
