//! The certificates phase of a reconcile against a scripted API server: a
//! new TLS cluster gets its CA and certificate Secrets before anything else,
//! current Secrets are left alone, and a new value of the rotation
//! annotation issues new certificates from the same CA.

mod common;

use common::apiserver::{expect, Expect, Reply, Seen};
use common::raft_cluster;
use common::reconciler::*;
use k8s_openapi::jiff::Timestamp;
use raftkv_operator::certificates::{issue_leaves, new_ca, ROTATE_ANNOTATION};
use raftkv_operator::crd::RaftCluster;
use raftkv_operator::naming::ClusterNames;
use raftkv_operator::resources::{ca_secret, leaf_secret, Owned};
use serde_json::Value;

fn with_tls(mut rc: RaftCluster) -> RaftCluster {
    rc.spec.tls = Some(serde_json::from_value(serde_json::json!({})).unwrap());
    rc
}

fn secret(name: &str) -> String {
    format!("{NS}/secrets/{name}")
}

fn apply(name: &str) -> Expect {
    expect(
        "PATCH",
        format!("{}{APPLY_QUERY}", secret(name)),
        Reply::Echo,
    )
}

/// The reads of the CA, member and client Secrets, answered with `secrets`
/// (`None`: not found).
fn reads(secrets: [Option<Value>; 3]) -> Vec<Expect> {
    ["demo-ca", "demo-member-tls", "demo-client-tls"]
        .into_iter()
        .zip(secrets)
        .map(|(name, s)| expect("GET", secret(name), s.map_or(Reply::NotFound, Reply::Json)))
        .collect()
}

/// Current Secrets for `rc`, issued for `rotation`.
fn current(rc: &RaftCluster, rotation: &str) -> [Option<Value>; 3] {
    let owned = Owned::of(rc).unwrap();
    let names = ClusterNames::new("demo", "prod");
    let now = Timestamp::now();
    let ca = new_ca(&names, now).unwrap();
    let leaves = issue_leaves(&ca, &names, now, 90).unwrap();
    let leaf = |name: String, pair| {
        serde_json::to_value(leaf_secret(
            &owned,
            name,
            pair,
            &ca,
            leaves.not_after,
            rotation,
        ))
        .ok()
    };
    [
        serde_json::to_value(ca_secret(&owned, &ca)).ok(),
        leaf(names.member_tls_secret(), &leaves.member),
        leaf(names.client_tls_secret(), &leaves.client),
    ]
}

fn data_of(seen: &Seen) -> &Value {
    &seen.body["data"]
}

#[tokio::test]
async fn a_new_tls_cluster_gets_its_ca_and_certificates_before_anything_else() {
    let rc = with_tls(initialized(raft_cluster("demo", 3)));
    let mut script = reads([None, None, None]);
    script.insert(1, apply("demo-ca"));
    script.extend([
        apply("demo-member-tls"),
        apply("demo-client-tls"),
        expect("POST", EVENTS, Reply::Echo),
    ]);
    script.extend(preamble(Some(3), &[0, 1, 2]));
    script.push(status_patch(&rc));
    let (_, seen, _) = run_with(rc, members(&[1, 2, 3], &[]), script, |_| {}).await;
    let ca = data_of(&seen[1]);
    assert!(ca["ca.crt"].is_string() && ca["ca.key"].is_string(), "{ca}");
    for leaf in [&seen[4], &seen[5]] {
        assert_eq!(leaf.body["type"], "kubernetes.io/tls");
        let data = data_of(leaf);
        assert_eq!(data["ca.crt"], ca["ca.crt"], "the leaves carry their CA");
        assert!(data["tls.crt"].is_string() && data["tls.key"].is_string());
        assert!(leaf.body["metadata"]["annotations"]["raftkv.io/not-after"].is_string());
    }
    assert_eq!(seen[6].body["reason"], "IssuedCertificates");
    let sts = seen
        .iter()
        .find(|s| s.method == "PATCH" && s.uri.contains("/statefulsets/demo"))
        .expect("the StatefulSet is applied after the Secrets");
    let volumes = &sts.body["spec"]["template"]["spec"]["volumes"];
    assert_eq!(volumes[0]["secret"]["secretName"], "demo-member-tls");
}

#[tokio::test]
async fn current_certificates_are_left_alone_and_a_new_rotation_value_renews_them() {
    let rc = with_tls(initialized(raft_cluster("demo", 3)));
    let secrets = current(&rc, "");
    let mut script = reads(secrets.clone());
    script.extend(preamble(Some(3), &[0, 1, 2]));
    script.push(status_patch(&rc));
    run_with(rc.clone(), members(&[1, 2, 3], &[]), script, |_| {}).await;

    let mut rotated = rc;
    rotated
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(ROTATE_ANNOTATION.to_string(), "2026-12-07".to_string());
    let mut script = reads(secrets.clone());
    script.extend([
        apply("demo-member-tls"),
        apply("demo-client-tls"),
        expect("POST", EVENTS, Reply::Echo),
    ]);
    script.extend(preamble(Some(3), &[0, 1, 2]));
    script.push(status_patch(&rotated));
    let (_, seen, _) = run_with(rotated, members(&[1, 2, 3], &[]), script, |_| {}).await;
    let old_member = secrets[1].as_ref().unwrap();
    let member = &seen[3].body;
    assert_eq!(
        member["data"]["ca.crt"], old_member["data"]["ca.crt"],
        "the same CA"
    );
    assert_ne!(member["data"]["tls.crt"], old_member["data"]["tls.crt"]);
    assert_eq!(
        member["metadata"]["annotations"]["raftkv.io/issued-for-rotation"],
        "2026-12-07"
    );
    assert!(seen[5].body["note"]
        .as_str()
        .unwrap()
        .contains("rotate-certificates changed"));
}
