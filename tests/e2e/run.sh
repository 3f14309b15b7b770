#!/usr/bin/env bash
# kind end-to-end test: the image, the Helm chart and the operator on a real
# Kubernetes, scaling a RaftCluster under writes. See tests/e2e/README.md.
#
# Skips (exit 0, one line saying why) unless docker, kind, kubectl, helm and
# etcdctl are installed and a Docker engine answers.
set -euo pipefail
cd "$(dirname "$0")/../.."

KIND_CLUSTER="${RAFTKV_E2E_KIND_CLUSTER:-raftkv-e2e}"
IMAGE_REPO=raftkv
IMAGE_TAG=e2e
OPERATOR_NS=raftkv-system
NS=raftkv-e2e
RC=e2e
LOCAL_PORT="${RAFTKV_E2E_PORT:-23790}"
ARTIFACTS="${RAFTKV_E2E_ARTIFACTS:-${TMPDIR:-/tmp}/raftkv-e2e-$(date +%Y%m%d-%H%M%S)}"

# --- skip unless everything is here ------------------------------------------

# helm may come from .ci/chart-checks' cache rather than PATH.
HELM="$(command -v helm || true)"
[ -n "$HELM" ] || { [ -x "$HOME/.cache/raftkv/tools/helm-v3.17/helm" ] && HELM="$HOME/.cache/raftkv/tools/helm-v3.17/helm"; } || true

missing=()
for tool in docker kind kubectl etcdctl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ -n "$HELM" ] || missing+=(helm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "e2e: skipped: not installed: ${missing[*]}"
  exit 0
fi
if ! docker info >/dev/null 2>&1; then
  echo "e2e: skipped: no Docker engine answers (docker info failed; the docker client alone is not enough)"
  exit 0
fi

# --- helpers -------------------------------------------------------------------

log() { echo "e2e: $*"; }
k() { kubectl --context "kind-$KIND_CLUSTER" "$@"; }
kn() { k -n "$NS" "$@"; }

PF_PID=""
stop_port_forward() {
  if [ -n "$PF_PID" ]; then kill "$PF_PID" 2>/dev/null || true; wait "$PF_PID" 2>/dev/null || true; fi
  PF_PID=""
}
# A port-forward to a Service is pinned to one pod; it is (re)started only while
# membership is stable, and writes during scaling go through the in-cluster writer.
start_port_forward() {
  stop_port_forward
  kn port-forward "svc/$RC" "$LOCAL_PORT:2379" >"$ARTIFACTS/port-forward.log" 2>&1 &
  PF_PID=$!
  for _ in $(seq 1 30); do
    etcdctl --endpoints "127.0.0.1:$LOCAL_PORT" --dial-timeout 2s endpoint health >/dev/null 2>&1 && return 0
    sleep 1
  done
  log "port-forward to svc/$RC did not come up"; return 1
}
ctl() { ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$LOCAL_PORT" --dial-timeout 3s --command-timeout 10s "$@"; }

# Wait until the RaftCluster has `n` ready voters, no learner, and phase Running.
wait_members() {
  local n="$1" deadline=$((SECONDS + ${2:-600})) got=""
  log "waiting for $n ready voters"
  while [ $SECONDS -lt $deadline ]; do
    got="$(kn get rkc "$RC" -o jsonpath='{.status.readyReplicas}/{.status.voters}/{.status.learners}/{.status.phase}' 2>/dev/null || true)"
    if [ "$got" = "$n/$n/0/Running" ]; then log "  $n members: ready, voting, Running"; return 0; fi
    sleep 3
  done
  log "timed out waiting for $n members (ready/voters/learners/phase = $got)"
  return 1
}

collect_logs() {
  log "collecting diagnostics into $ARTIFACTS"
  k get nodes -o wide >"$ARTIFACTS/nodes.txt" 2>&1 || true
  k get all,pvc,pdb,rkc -A -o wide >"$ARTIFACTS/objects.txt" 2>&1 || true
  kn get rkc "$RC" -o yaml >"$ARTIFACTS/raftcluster.yaml" 2>&1 || true
  kn describe rkc "$RC" >"$ARTIFACTS/raftcluster-describe.txt" 2>&1 || true
  k get events -A --sort-by=.lastTimestamp >"$ARTIFACTS/events.txt" 2>&1 || true
  k -n "$OPERATOR_NS" logs deployment/raftkv-operator --all-containers >"$ARTIFACTS/operator.log" 2>&1 || true
  for pod in $(kn get pods -o name 2>/dev/null); do
    kn logs "$pod" --all-containers >"$ARTIFACTS/${pod#pod/}.log" 2>&1 || true
    kn logs "$pod" --all-containers --previous >"$ARTIFACTS/${pod#pod/}.previous.log" 2>/dev/null || true
  done
}

finish() {
  local rc=$?
  stop_port_forward
  if [ $rc -ne 0 ]; then
    collect_logs
    log "FAILED (exit $rc); diagnostics in $ARTIFACTS"
  fi
  if [ "${RAFTKV_E2E_KEEP:-0}" = 1 ]; then
    log "keeping kind cluster $KIND_CLUSTER (RAFTKV_E2E_KEEP=1)"
  else
    kind delete cluster --name "$KIND_CLUSTER" >/dev/null 2>&1 || true
  fi
  exit $rc
}

# --- the test ------------------------------------------------------------------

mkdir -p "$ARTIFACTS"
trap finish EXIT

log "creating kind cluster $KIND_CLUSTER"
if ! kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
  kind create cluster --name "$KIND_CLUSTER" --wait 180s
fi

log "building image $IMAGE_REPO:$IMAGE_TAG (the first build compiles RocksDB: ~20 minutes)"
docker build -t "$IMAGE_REPO:$IMAGE_TAG" .
kind load docker-image "$IMAGE_REPO:$IMAGE_TAG" --name "$KIND_CLUSTER"

log "installing the chart"
"$HELM" upgrade --install raftkv-operator charts/raftkv-operator \
  --kube-context "kind-$KIND_CLUSTER" --namespace "$OPERATOR_NS" --create-namespace \
  --set image.repository="$IMAGE_REPO" --set image.tag="$IMAGE_TAG" --set image.pullPolicy=Never \
  --wait --timeout 180s
k -n "$OPERATOR_NS" rollout status deployment/raftkv-operator --timeout 120s

log "creating a 3-member RaftCluster"
k create namespace "$NS" --dry-run=client -o yaml | k apply -f -
kn apply -f - <<EOF
apiVersion: raftkv.io/v1alpha1
kind: RaftCluster
metadata:
  name: $RC
spec:
  replicas: 3
  image: $IMAGE_REPO:$IMAGE_TAG
  storage:
    size: 256Mi
EOF
kn wait "rkc/$RC" --for=condition=Available --timeout 600s
wait_members 3

log "writing keys through the client Service (port-forward + etcdctl)"
start_port_forward
: >"$ARTIFACTS/acked.txt"
for i in $(seq 1 50); do
  ctl put "e2e/pf/$i" "v$i" >/dev/null
  echo "e2e/pf/$i v$i" >>"$ARTIFACTS/acked.txt"
done
stop_port_forward

# Writes while the membership changes: a pod in the cluster writes through the
# client Service (which follows ready members) and prints ACK for every write
# that succeeded. Only acknowledged writes are checked afterwards.
log "starting the in-cluster writer"
kn apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: writer
spec:
  restartPolicy: Never
  containers:
    - name: writer
      image: $IMAGE_REPO:$IMAGE_TAG
      imagePullPolicy: Never
      command: ["/bin/sh", "-c"]
      args:
        - |
          i=0
          while true; do
            i=\$((i + 1))
            if raftkv put --endpoints $RC:2379 e2e/w/\$i v\$i >/dev/null 2>&1; then echo "ACK e2e/w/\$i v\$i"; fi
            sleep 0.1
          done
EOF
kn wait pod/writer --for=condition=Ready --timeout 120s

for n in 5 3 1 3; do
  log "kubectl scale rkc $RC --replicas=$n"
  kn scale rkc "$RC" --replicas="$n"
  wait_members "$n" 900
done

victim="$RC-1"
log "deleting member pod $victim; it must come back and rejoin"
old_uid="$(kn get pod "$victim" -o jsonpath='{.metadata.uid}')"
kn delete pod "$victim" --wait=true
for _ in $(seq 1 120); do
  uid="$(kn get pod "$victim" -o jsonpath='{.metadata.uid}' 2>/dev/null || true)"
  [ -n "$uid" ] && [ "$uid" != "$old_uid" ] && break
  sleep 2
done
kn wait "pod/$victim" --for=condition=Ready --timeout 300s
wait_members 3

log "stopping the writer"
kn logs writer | sed -n 's/^ACK //p' >>"$ARTIFACTS/acked.txt"
kn delete pod writer --wait=false
acked_during_scaling="$(grep -c '^e2e/w/' "$ARTIFACTS/acked.txt" || true)"
[ "$acked_during_scaling" -gt 0 ] || { log "the writer got no write acknowledged"; exit 1; }

log "checking every acknowledged key ($(wc -l <"$ARTIFACTS/acked.txt") keys)"
start_port_forward
# etcdctl prints key and value on alternate lines.
ctl get e2e/ --prefix | paste -d ' ' - - | sort >"$ARTIFACTS/stored.txt"
sort "$ARTIFACTS/acked.txt" >"$ARTIFACTS/acked.sorted.txt"
lost="$(comm -23 "$ARTIFACTS/acked.sorted.txt" "$ARTIFACTS/stored.txt")"
if [ -n "$lost" ]; then
  log "acknowledged writes missing or wrong:"
  echo "$lost" | head -20
  exit 1
fi
stop_port_forward
log "  all $(wc -l <"$ARTIFACTS/acked.txt") acknowledged keys are there"

log "deleting the RaftCluster"
kn delete rkc "$RC" --wait=true --timeout 120s
for _ in $(seq 1 60); do
  [ -z "$(kn get statefulset "$RC" -o name 2>/dev/null)" ] && break
  sleep 2
done
[ -z "$(kn get statefulset "$RC" -o name 2>/dev/null)" ] || { log "the StatefulSet outlived its RaftCluster"; exit 1; }

log "passed"
