//! The Helm chart ships the same RaftCluster CRD the operator generates.
//!
//! Helm installs `charts/raftkv-operator/crds/` as is, so that copy must be the
//! generated CRD byte for byte (crds/raftcluster.yaml is kept equal to the
//! generated one by the operator's own test). The rest of the chart (lint,
//! rendering, Kubernetes 1.33 schemas, RBAC against the operator's API calls) is
//! checked by .ci/chart-checks; the example RaftCluster is validated against the
//! CRD schema by operator/tests/crd_schema.rs.

fn read(relative: &str) -> String {
    let path = raftkv_tests::repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

const CHART_CRD: &str = "charts/raftkv-operator/crds/raftcluster.yaml";

#[test]
fn chart_crd_is_the_checked_in_crd() {
    assert!(
        read(CHART_CRD) == read("crds/raftcluster.yaml"),
        "{CHART_CRD} differs from crds/raftcluster.yaml: \
         cp crds/raftcluster.yaml {CHART_CRD}"
    );
}

#[test]
fn chart_crd_is_the_generated_crd() {
    let generated = raftkv_operator::crd::crd_yaml().expect("CRD serializes");
    assert!(
        read(CHART_CRD) == generated,
        "{CHART_CRD} is out of date: \
         cargo run -p raftkv-operator -- crd > {CHART_CRD}"
    );
}

/// The value of the first `key: value` line (plain YAML scalars only).
fn scalar(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(key)?.strip_prefix(':')?;
        Some(rest.trim().trim_matches('"').to_string())
    })
}

/// The README's deploy steps build `raftkv:<appVersion>`, which is both the
/// chart's default image and the image the example cluster runs.
#[test]
fn example_cluster_runs_the_image_the_chart_defaults_to() {
    let app_version = scalar(&read("charts/raftkv-operator/Chart.yaml"), "appVersion")
        .expect("Chart.yaml has appVersion");
    let values = read("charts/raftkv-operator/values.yaml");
    assert_eq!(scalar(&values, "repository").as_deref(), Some("raftkv"));
    let example_image = scalar(&read("charts/examples/raftcluster.yaml"), "image")
        .expect("the example sets spec.image");
    assert_eq!(example_image, format!("raftkv:{app_version}"));
}
