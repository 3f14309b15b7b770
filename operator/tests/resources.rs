//! The owned objects: flags, probes, volumes, owner references and labels.

mod common;

use common::{raft_cluster, UID};
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use raftkv_operator::crd::{PodTemplateOverrides, RaftCluster};
use raftkv_operator::resources::{
    client_service, member_command, peer_service, pod_disruption_budget, statefulset,
    ClaimTemplate, Owned,
};
use std::collections::BTreeMap;

fn owned(name: &str) -> Owned {
    Owned::of(&raft_cluster(name, 3)).expect("complete metadata")
}

#[test]
fn every_object_is_owned_by_the_raftcluster_and_labelled() {
    let rc = raft_cluster("demo", 3);
    let owned = Owned::of(&rc).unwrap();
    let metas = [
        peer_service(&owned).metadata,
        client_service(&owned).metadata,
        pod_disruption_budget(&owned, 3).metadata,
        statefulset(&rc, &owned, 1, &ClaimTemplate::of_spec(&rc)).metadata,
    ];
    for meta in metas {
        let refs = meta.owner_references.expect("owner references");
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].uid, UID);
        assert_eq!(refs[0].kind, "RaftCluster");
        assert_eq!(refs[0].api_version, "raftkv.io/v1alpha1");
        assert_eq!(refs[0].controller, Some(true));
        assert_eq!(meta.namespace.as_deref(), Some("prod"));
        let labels = meta.labels.expect("labels");
        assert_eq!(labels["app.kubernetes.io/name"], "raftkv");
        assert_eq!(labels["app.kubernetes.io/instance"], "demo");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "raftkv-operator");
    }
}

#[test]
fn an_object_without_uid_cannot_be_owned() {
    let mut rc = raft_cluster("demo", 3);
    rc.metadata.uid = None;
    let err = Owned::of(&rc).err().expect("refused");
    assert!(err.to_string().contains("uid"), "{err}");
}

#[test]
fn peer_service_is_headless_and_publishes_not_ready_pods() {
    let svc = peer_service(&owned("demo"));
    assert_eq!(svc.metadata.name.as_deref(), Some("demo-peer"));
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(true));
    let ports: Vec<i32> = spec.ports.unwrap().iter().map(|p| p.port).collect();
    assert_eq!(ports, vec![2380, 2379, 2381], "peer, client, metrics");
    assert_eq!(spec.selector.unwrap()["app.kubernetes.io/instance"], "demo");
}

#[test]
fn client_service_serves_2379() {
    let owned = owned("demo");
    let svc = client_service(&owned).spec.unwrap();
    assert_eq!(svc.cluster_ip, None, "a normal ClusterIP service");
    assert_eq!(svc.ports.unwrap()[0].port, 2379);
}

#[test]
fn the_disruption_budget_keeps_a_quorum_of_the_members() {
    let owned = owned("demo");
    for (members, keep) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)] {
        let pdb = pod_disruption_budget(&owned, members).spec.unwrap();
        assert_eq!(pdb.min_available, Some(IntOrString::Int(keep)), "{members}");
        assert_eq!(pdb.max_unavailable, None);
    }
}

#[test]
fn member_command_joins_with_ordinal_plus_one_and_dns_urls() {
    let cmd = member_command(&owned("demo").names, false, false);
    assert!(
        cmd.contains("exec raftkv serve --join --id \"$((ordinal + 1))\""),
        "{cmd}"
    );
    assert!(cmd.contains(r#"ordinal="${POD_NAME##*-}""#), "{cmd}");
    assert!(
        cmd.contains("--initial-advertise-peer-urls \"http://${POD_NAME}.demo-peer.${POD_NAMESPACE}.svc:2380\""),
        "{cmd}"
    );
    assert!(
        cmd.contains(
            "--advertise-client-urls \"http://${POD_NAME}.demo-peer.${POD_NAMESPACE}.svc:2379\""
        ),
        "{cmd}"
    );
    for flag in [
        "--data-dir /var/lib/raftkv",
        "--listen-client-urls http://0.0.0.0:2379",
        "--listen-peer-urls http://0.0.0.0:2380",
        "--listen-metrics-urls http://0.0.0.0:2381",
    ] {
        assert!(cmd.contains(flag), "missing {flag}: {cmd}");
    }
    assert!(
        !cmd.contains("--initial-cluster"),
        "no pod bootstraps itself"
    );
}

/// The member pod spec of a 3-member StatefulSet of `rc` (named demo).
fn member_pod(rc: &RaftCluster) -> PodSpec {
    statefulset(rc, &owned("demo"), 3, &ClaimTemplate::of_spec(rc))
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
}

/// Runs the member command's prologue for real, as pod `pod` in namespace
/// prod: the flags `raftkv serve` would get.
fn serve_flags(command: &str, pod: &str) -> String {
    let cmd = command.replace("exec raftkv serve", "echo");
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", &cmd])
        .env("POD_NAME", pod)
        .env("POD_NAMESPACE", "prod")
        .output()
        .expect("running /bin/sh");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn the_member_command_computes_the_id_from_the_pod_name() {
    // Run the prologue for real: `demo-4` must become id 5.
    let cmd =
        member_command(&owned("demo").names, false, false).replace("exec raftkv serve", "echo");
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", &cmd])
        .env("POD_NAME", "demo-4")
        .env("POD_NAMESPACE", "prod")
        .output()
        .expect("running /bin/sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.starts_with("--join --id 5 --name demo-4 "),
        "{stdout}"
    );
    assert!(
        stdout.contains("--initial-advertise-peer-urls http://demo-4.demo-peer.prod.svc:2380"),
        "{stdout}"
    );
}

#[test]
fn an_existing_statefulset_keeps_the_claim_template_it_was_created_with() {
    let mut rc = raft_cluster("demo", 3);
    rc.spec.storage.size = "2Gi".to_string();
    let owned = Owned::of(&rc).unwrap();
    let created = statefulset(&rc, &owned, 3, &ClaimTemplate::of_spec(&rc));
    let kept = ClaimTemplate::of_statefulset(&created).expect("a data claim template");
    assert_eq!(kept, ClaimTemplate::of_spec(&rc));
    // The user asks for more: the template stays (the API server would
    // refuse the whole StatefulSet otherwise); the claims are expanded.
    rc.spec.storage.size = "3Gi".to_string();
    let reapplied = statefulset(&rc, &owned, 3, &kept);
    assert_eq!(
        reapplied.spec.unwrap().volume_claim_templates,
        created.spec.unwrap().volume_claim_templates
    );
}

#[test]
fn statefulset_has_probes_volume_retention_and_replicas_from_the_planner() {
    let mut rc = raft_cluster("demo", 5);
    rc.spec.storage.size = "10Gi".to_string();
    rc.spec.storage.storage_class_name = Some("fast".to_string());
    let sts = statefulset(
        &rc,
        &Owned::of(&rc).unwrap(),
        2,
        &ClaimTemplate::of_spec(&rc),
    );
    let spec = sts.spec.unwrap();
    assert_eq!(
        spec.replicas,
        Some(2),
        "the planner's count, not spec.replicas"
    );
    assert_eq!(spec.service_name.as_deref(), Some("demo-peer"));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    let retention = spec.persistent_volume_claim_retention_policy.unwrap();
    // Kubernetes never deletes a volume: an outside scale-down would take
    // members' data; the operator deletes a volume once its member is gone.
    assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
    assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));

    let claims = spec.volume_claim_templates.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
    let claim = claims[0].spec.clone().unwrap();
    assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        claim.resources.unwrap().requests.unwrap()["storage"].0,
        "10Gi"
    );

    let pod = spec.template.spec.unwrap();
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("raftkv:test"));
    assert_eq!(
        c.command.as_deref(),
        Some(&["/bin/sh".to_string(), "-c".to_string()][..])
    );
    let ready = c.readiness_probe.clone().unwrap().http_get.unwrap();
    assert_eq!(ready.path.as_deref(), Some("/readyz"));
    assert_eq!(ready.port, IntOrString::Int(2381));
    let live = c.liveness_probe.clone().unwrap().http_get.unwrap();
    assert_eq!(live.path.as_deref(), Some("/healthz"));
    let mount = &c.volume_mounts.as_ref().unwrap()[0];
    assert_eq!(
        (mount.name.as_str(), mount.mount_path.as_str()),
        ("data", "/var/lib/raftkv")
    );
    let env: Vec<_> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(env, vec!["POD_NAME", "POD_NAMESPACE"]);
    let selector = spec.selector.match_labels.unwrap();
    let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
    for (k, v) in &selector {
        assert_eq!(pod_labels.get(k), Some(v), "pod lacks selector label {k}");
    }
}

#[test]
fn pod_template_overrides_are_applied_but_cannot_break_the_selector() {
    let mut rc = raft_cluster("demo", 3);
    rc.spec.pod_template = Some(PodTemplateOverrides {
        labels: BTreeMap::from([
            ("team".to_string(), "storage".to_string()),
            (
                "app.kubernetes.io/instance".to_string(),
                "hijack".to_string(),
            ),
        ]),
        annotations: BTreeMap::from([("a".to_string(), "b".to_string())]),
        node_selector: BTreeMap::from([("disk".to_string(), "ssd".to_string())]),
        ..PodTemplateOverrides::default()
    });
    let sts = statefulset(
        &rc,
        &Owned::of(&rc).unwrap(),
        3,
        &ClaimTemplate::of_spec(&rc),
    );
    let template = sts.spec.unwrap().template;
    let meta = template.metadata.unwrap();
    let labels = meta.labels.unwrap();
    assert_eq!(labels["team"], "storage");
    assert_eq!(labels["app.kubernetes.io/instance"], "demo");
    assert_eq!(meta.annotations.unwrap()["a"], "b");
    assert_eq!(template.spec.unwrap().node_selector.unwrap()["disk"], "ssd");
}

#[test]
fn member_pods_run_as_the_image_user_and_own_their_volume() {
    let rc = raft_cluster("demo", 3);
    let sts = raftkv_operator::resources::statefulset(
        &rc,
        &owned("demo"),
        3,
        &ClaimTemplate::of_spec(&rc),
    );
    let pod = sts.spec.unwrap().template.spec.unwrap();
    let ctx = pod.security_context.expect("a pod security context");
    assert_eq!(ctx.run_as_non_root, Some(true));
    assert_eq!(
        ctx.run_as_user,
        Some(raftkv_operator::resources::MEMBER_UID)
    );
    assert_eq!(
        ctx.fs_group,
        Some(raftkv_operator::resources::MEMBER_UID),
        "the data volume must be writable"
    );
}

#[test]
fn a_shared_backup_claim_is_mounted_and_passed_as_the_backup_dir() {
    let mut rc = raft_cluster("demo", 3);
    let plain = statefulset(&rc, &owned("demo"), 3, &ClaimTemplate::of_spec(&rc));
    let plain_pod = plain.spec.unwrap().template.spec.unwrap();
    assert!(
        plain_pod.volumes.is_none(),
        "no extra volume without a claim"
    );
    assert!(!plain_pod.containers[0].args.as_ref().unwrap()[0].contains("--backup-dir"));

    rc.spec.snapshot = Some(
        serde_json::from_value(serde_json::json!({
            "schedule": "0 3 * * *",
            "volume": {"claimName": "raftkv-backups"}
        }))
        .unwrap(),
    );
    let pod = member_pod(&rc);
    let volumes = pod.volumes.expect("backup volume");
    assert_eq!(volumes[0].name, "backups");
    assert_eq!(
        volumes[0]
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name,
        "raftkv-backups"
    );
    let container = &pod.containers[0];
    let mounts = container.volume_mounts.as_ref().unwrap();
    assert!(mounts
        .iter()
        .any(|m| m.name == "backups" && m.mount_path == "/var/lib/raftkv-backups"));
    assert!(container.args.as_ref().unwrap()[0].contains("--backup-dir /var/lib/raftkv-backups"));
}

#[test]
fn with_tls_members_mount_their_certificate_and_serve_only_tls() {
    let mut rc = raft_cluster("demo", 3);
    rc.spec.tls = Some(serde_json::from_value(serde_json::json!({})).unwrap());
    let pod = member_pod(&rc);
    let volumes = pod.volumes.expect("the certificate volume");
    let tls = volumes
        .iter()
        .find(|v| v.name == "tls")
        .expect("tls volume");
    assert_eq!(
        tls.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("demo-member-tls")
    );
    let container = &pod.containers[0];
    assert!(container
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .any(|m| m.name == "tls"
            && m.mount_path == "/etc/raftkv/tls"
            && m.read_only == Some(true)));

    let flags = serve_flags(&container.args.as_ref().unwrap()[0], "demo-1");
    for flag in [
        "--listen-client-urls https://0.0.0.0:2379",
        "--advertise-client-urls https://demo-1.demo-peer.prod.svc:2379",
        "--listen-peer-urls https://0.0.0.0:2380",
        "--initial-advertise-peer-urls https://demo-1.demo-peer.prod.svc:2380",
        // Probes stay on the plain metrics port.
        "--listen-metrics-urls http://0.0.0.0:2381",
        "--cert-file /etc/raftkv/tls/tls.crt --key-file /etc/raftkv/tls/tls.key",
        "--trusted-ca-file /etc/raftkv/tls/ca.crt --client-cert-auth",
        "--peer-cert-file /etc/raftkv/tls/tls.crt --peer-key-file /etc/raftkv/tls/tls.key",
        "--peer-trusted-ca-file /etc/raftkv/tls/ca.crt --peer-client-cert-auth",
    ] {
        assert!(flags.contains(flag), "missing {flag}: {flags}");
    }
    // Without spec.tls, none of it.
    let plain = member_command(&owned("demo").names, false, false);
    assert!(
        !plain.contains("https") && !plain.contains("cert-file"),
        "{plain}"
    );
}
