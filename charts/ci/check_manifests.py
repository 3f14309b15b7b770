"""Checks on rendered chart manifests, run by .ci/chart-checks.

  check_manifests.py validate K8S_VERSION FILE...
      Every object in FILEs must validate (strict: unknown fields are errors)
      against the Kubernetes K8S_VERSION schemas shipped with kubernetes-validate.

  check_manifests.py rbac FILE [NAMESPACE]
      The operator's rules in FILE must grant exactly OPERATOR_CALLS below: a
      ClusterRole, or with NAMESPACE (a namespace-scoped install) a Role in that
      namespace and no ClusterRole at all.

Runs with the Python of the kubernetes-validate virtualenv (it has PyYAML).
"""

import sys

import kubernetes_validate
import yaml

# Kinds that no built-in Kubernetes schema describes, so kubernetes-validate cannot
# check them. Everything else must validate.
SKIPPED_KINDS = {
    # Our own custom resource: validated against its CRD's openAPIV3Schema by the
    # operator's test (operator/tests/crd_schema.rs validates charts/examples/).
    "RaftCluster": "validated against the CRD by cargo test -p raftkv-operator",
    # The Prometheus Operator's custom resource (optional template).
    "ServiceMonitor": "a Prometheus Operator CRD; no Kubernetes schema for it",
}

# Every Kubernetes API call raftkv-operator makes, as (API group, resource, verb),
# read from operator/src. The chart's ClusterRole must grant exactly these.
OPERATOR_CALLS = {
    # controller.rs run(): Controller::new(Api::<RaftCluster>::all) lists and watches.
    ("raftkv.io", "raftclusters", "list"),
    ("raftkv.io", "raftclusters", "watch"),
    # controller.rs reconcile(): kube::runtime::finalizer adds and removes the
    # finalizer with a JSON patch.
    ("raftkv.io", "raftclusters", "patch"),
    # controller/mod.rs apply(): kube_ops::read_current gets the RaftCluster
    # afresh (the watch cache can lag a status write).
    ("raftkv.io", "raftclusters", "get"),
    # controller.rs apply(): api.patch_status (merge patch of .status).
    ("raftkv.io", "raftclusters/status", "patch"),
    # controller.rs run(): .owns(Api::<StatefulSet>::all) lists and watches.
    ("apps", "statefulsets", "list"),
    ("apps", "statefulsets", "watch"),
    # controller.rs apply(): statefulsets.get_opt (keep the planner's replica count).
    ("apps", "statefulsets", "get"),
    # controller.rs server_side_apply(): Patch::Apply of the StatefulSet. An apply
    # that creates the object is authorized as `create`, so both verbs.
    ("apps", "statefulsets", "patch"),
    ("apps", "statefulsets", "create"),
    # controller.rs run(): .owns(Api::<Service>::all) lists and watches.
    ("", "services", "list"),
    ("", "services", "watch"),
    # controller.rs apply(): server_side_apply of the peer and client Services.
    ("", "services", "patch"),
    ("", "services", "create"),
    # controller.rs apply(): server_side_apply of the PodDisruptionBudget.
    ("policy", "poddisruptionbudgets", "patch"),
    ("policy", "poddisruptionbudgets", "create"),
    # controller.rs apply(): pvcs.list by label selector (which volumes exist).
    ("", "persistentvolumeclaims", "list"),
    # controller.rs delete_volume(): pvcs.delete.
    ("", "persistentvolumeclaims", "delete"),
    # controller/volumes.rs expand_volumes(): kube_ops expand_volume patches a claim's request.
    ("", "persistentvolumeclaims", "patch"),
    # kube_ops reset_member() and delete_pod() (a rollout's restart): pods.delete.
    ("", "pods", "delete"),
    # controller/rollout.rs roll_out() and controller/recovery.rs recover():
    # kube_ops member_pods lists them (template revision, readiness).
    ("", "pods", "list"),
    # controller/certificates.rs ensure_certificates(): kube_ops secret() reads
    # the CA and certificate Secrets; apply() makes and renews them.
    ("", "secrets", "get"),
    ("", "secrets", "create"),
    ("", "secrets", "patch"),
    # leader_election.rs: the Lease is read, created once, and replaced on
    # every take and renewal (a Role in the release's namespace).
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
    # controller.rs publish(): kube::runtime::events::Recorder::publish creates an
    # events.k8s.io/v1 Event, and patches it into a series when it repeats.
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
}


def documents(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def validate(version, paths):
    checked = 0
    skipped = 0
    failed = 0
    for path in paths:
        for doc in documents(path):
            kind = doc.get("kind", "?")
            name = f"{kind}/{doc.get('metadata', {}).get('name', '?')}"
            if kind in SKIPPED_KINDS:
                print(f"  skip {name} ({SKIPPED_KINDS[kind]})")
                skipped += 1
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                print(f"  ok   {name}")
                checked += 1
            except Exception as e:  # SchemaNotFoundError, ValidationError, ...
                print(f"  FAIL {name} in {path}: {e}")
                failed += 1
    if checked + skipped + failed == 0:
        print("  FAIL no object found")
        return 1
    return 1 if failed else 0


def rbac(path, watched=None):
    docs = list(documents(path))
    cluster_roles = [d for d in docs if d.get("kind") == "ClusterRole"]
    roles = [d for d in docs if d.get("kind") == "Role"]
    if watched is None and len(cluster_roles) != 1:
        print(f"  FAIL expected one ClusterRole in {path}, found {len(cluster_roles)}")
        return 1
    if watched is not None:
        if cluster_roles:
            print(f"  FAIL a namespace-scoped install renders a ClusterRole: {cluster_roles[0]['metadata']['name']}")
            return 1
        if not any(r["metadata"].get("namespace") == watched for r in roles):
            print(f"  FAIL no Role in the watched namespace {watched}")
            return 1
        bindings = [d for d in docs if d.get("kind") == "ClusterRoleBinding"]
        if bindings:
            print(f"  FAIL a namespace-scoped install renders a ClusterRoleBinding")
            return 1
    # The leader-election Role (leases, in the release's namespace) counts too.
    roles = cluster_roles + roles
    granted = set()
    for rule in [r for role in roles for r in role.get("rules", [])]:
        for key in ("resourceNames", "nonResourceURLs"):
            if key in rule:
                print(f"  FAIL rule uses {key}, which the operator's calls do not need: {rule}")
                return 1
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    granted.add((group, resource, verb))
    extra = sorted(granted - OPERATOR_CALLS)
    missing = sorted(OPERATOR_CALLS - granted)
    for call in missing:
        print(f"  FAIL the operator calls {call} but the ClusterRole does not grant it")
    for call in extra:
        print(f"  FAIL the ClusterRole grants {call} but the operator never calls it")
    if missing or extra:
        return 1
    print(f"  ok   ClusterRole grants exactly the operator's {len(OPERATOR_CALLS)} (group, resource, verb) calls")
    return 0


def main(argv):
    if len(argv) >= 3 and argv[0] == "validate":
        return validate(argv[1], argv[2:])
    if len(argv) in (2, 3) and argv[0] == "rbac":
        return rbac(argv[1], argv[2] if len(argv) == 3 else None)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
