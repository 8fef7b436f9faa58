#!/usr/bin/env bash
# End-to-end run of DogFS on a local kind cluster. Needs Docker and kind; helm and kubectl are
# taken from PATH or installed by scripts/k8s-tools. Not part of scripts/test (no Docker there).
#
#   scripts/kind-e2e.sh                 # create cluster, test, tear down
#   KEEP_CLUSTER=1 scripts/kind-e2e.sh  # leave the cluster running afterwards
#
# Steps: create the cluster (kind-config.yaml) → build the image (deploy/Dockerfile) and load
# it → helm install the operator → apply examples/dogcluster.yaml → wait for Ready → write
# and read objects with the dogfs CLI from a pod → delete a chunk pod and read again →
# scale chunk servers 6 → 8 (registration, rebalance) → 8 → 6 (drain, shrink, remove, claims
# kept, one server at a time, steps checked in order from the Events) → 6 → 7 (a retained
# claim rejoins as a new server) → 6, reading every object back after each → check that an
# invalid spec is refused → tear down.
#
# The CLI calls (`dogfs mb BUCKET`, `dogfs put FILE BUCKET/KEY`, `dogfs get BUCKET/KEY FILE`,
# docs/cli.md) are in cli_* below. The client pod takes DOGFS_ENDPOINT from the
# `<cluster>-client` ConfigMap (endpoint and CA bundle) and its token from the `<cluster>-auth`
# Secret, as an application pod using the SDK would.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

CLUSTER="${KIND_CLUSTER:-dogfs-e2e}"
IMAGE="${DOGFS_IMAGE:-dogfs:e2e}"
NS=dogfs-e2e
OP_NS=dogfs-system
TIMEOUT="${E2E_TIMEOUT:-600s}"
# The same bound, in seconds, for the polling waits below.
WAIT_SECS="${E2E_WAIT_SECS:-600}"

log() { printf '\n=== %s\n' "$*"; }
die() { printf 'kind-e2e: %s\n' "$*" >&2; exit 1; }

for tool in docker kind; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
if ! command -v helm >/dev/null 2>&1 || ! command -v kubectl >/dev/null 2>&1; then
  PATH="$(scripts/k8s-tools)/bin:$PATH"
fi

kube() { kubectl --context "kind-$CLUSTER" "$@"; }

dump() {
  log "diagnostics"
  kube get dogclusters,statefulsets,pods,pvc,svc,configmaps,pdb -A -o wide || true
  kube describe dogcluster -n "$NS" demo || true
  kube get dogcluster -n "$NS" demo -o jsonpath='{.status}' || true; echo
  kube get events -n "$NS" --sort-by=.lastTimestamp | tail -40 || true
  kube logs -n "$OP_NS" deploy/dogfs-operator --tail=200 || true
  for pod in demo-meta-0 demo-chunk-0; do kube logs -n "$NS" "$pod" --tail=50 || true; done
}

cleanup() {
  status=$?
  [ "$status" -ne 0 ] && dump
  if [ -z "${KEEP_CLUSTER:-}" ]; then
    log "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" || true
  fi
  exit "$status"
}

log "kind cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --config kind-config.yaml --wait 5m
fi
trap cleanup EXIT

log "image $IMAGE"
DOCKER_BUILDKIT=1 docker build -f deploy/Dockerfile -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"
repo="${IMAGE%:*}"
tag="${IMAGE##*:}"

log "operator (helm)"
helm --kube-context "kind-$CLUSTER" upgrade --install dogfs-operator charts/dogfs-operator \
  --namespace "$OP_NS" --create-namespace \
  --set image.repository="$repo" --set image.tag="$tag" --set image.pullPolicy=Never \
  --set logLevel="info,dogfs_operator=debug" --wait --timeout 5m
kube wait --for=condition=Established crd/dogclusters.dogfs.io --timeout=60s

log "DogCluster from examples/dogcluster.yaml"
kube create namespace "$NS" --dry-run=client -o yaml | kube apply -f -
# The example names a published image; use the one just built.
sed -e "s|^  image: .*|  image: $IMAGE|" -e "s|^  imagePullPolicy: .*|  imagePullPolicy: Never|" \
  examples/dogcluster.yaml | kube apply -n "$NS" -f -
kube wait -n "$NS" dogcluster/demo --for=condition=Ready --timeout="$TIMEOUT"
kube get -n "$NS" dogcluster demo
endpoint="$(kube get -n "$NS" configmap demo-client -o jsonpath='{.data.DOGFS_ENDPOINT}')"
# Secure by default: TLS from the operator's CA, tokens, NetworkPolicies (docs/kubernetes.md).
[ "$endpoint" = "https://demo-meta.$NS.svc:7000" ] || die "unexpected client endpoint $endpoint"

log "client pod (labelled for the NetworkPolicies; endpoint and CA from ConfigMap demo-client, token from Secret demo-auth)"
kube apply -n "$NS" -f - <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: dogfs-client
  labels:
    dogfs.io/client: demo
spec:
  restartPolicy: Never
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
  containers:
    - name: cli
      image: $IMAGE
      imagePullPolicy: Never
      command: ["sleep", "infinity"]
      env:
        - name: DOGFS_ENDPOINT
          valueFrom:
            configMapKeyRef: {name: demo-client, key: DOGFS_ENDPOINT}
        - name: DOGFS_CA
          value: /etc/dogfs/client/ca.crt
        - name: DOGFS_TOKEN
          valueFrom:
            secretKeyRef: {name: demo-auth, key: token}
      volumeMounts:
        - name: client
          mountPath: /etc/dogfs/client
          readOnly: true
  volumes:
    - name: client
      configMap:
        name: demo-client
        items:
          - {key: ca.crt, path: ca.crt}
YAML
kube wait -n "$NS" pod/dogfs-client --for=condition=Ready --timeout=120s

in_client() { kube exec -n "$NS" dogfs-client -- sh -c "$1"; }
cli_mb() { in_client "dogfs mb $1"; }
cli_put() { in_client "dogfs put $3 $1/$2"; }
cli_get() { in_client "dogfs get $1/$2 $3"; }

# Objects on both sides of the inline limit and spanning several stripes.
log "write objects"
cli_mb e2e
in_client 'head -c 100 /dev/urandom > /tmp/small && head -c 20000000 /dev/urandom > /tmp/large'
cli_put e2e small /tmp/small
cli_put e2e large /tmp/large

read_back() {
  rm_cmd='rm -f /tmp/small.back /tmp/large.back'
  in_client "$rm_cmd"
  cli_get e2e small /tmp/small.back
  cli_get e2e large /tmp/large.back
  in_client 'cmp /tmp/small /tmp/small.back && cmp /tmp/large /tmp/large.back' \
    || die "read-back differs ($1)"
  echo "read back ok ($1)"
}
read_back "healthy"
in_client 'dogfs ls e2e && dogfs cluster status'

log "delete a chunk pod and read again"
kube delete pod -n "$NS" demo-chunk-1 --wait=false
read_back "a chunk server restarting"
kube wait -n "$NS" dogcluster/demo --for=condition=Ready --timeout="$TIMEOUT"

# Waits until the command succeeds, polling, or fails after $WAIT_SECS: wait_for WHAT CMD...
wait_for() {
  what="$1"; shift
  deadline=$(( $(date +%s) + WAIT_SECS ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out waiting for $what"
    sleep 2
  done
}

# The operator's scaling Events about the DogCluster, oldest first, one "<reason> <related>"
# per line (events.k8s.io keeps the related pod or claim; eventTime has microseconds).
scaling_events() {
  kube get events.v1.events.k8s.io -n "$NS" -o jsonpath='{range .items[?(@.regarding.kind=="DogCluster")]}{.eventTime}{" "}{.reason}{" "}{.related.name}{"\n"}{end}' \
    | sort | awk '{print $2, $3}' \
    | grep -E '^(DrainStarted|Drained|ReplicasLowered|NodeRemoved|ClaimKept|ClaimDeleted|DrainCancelled) ' || true
}
has_event() { kube get events.v1.events.k8s.io -n "$NS" -o jsonpath='{range .items[*]}{.reason}{" "}{.related.name}{"\n"}{end}' | grep -qx "$1"; }
no_drain() { [ -z "$(kube get -n "$NS" dogcluster demo -o jsonpath='{.status.drain}')" ]; }

log "scale chunk servers 6 -> 8: grow, wait for registration, rebalance"
kube patch -n "$NS" dogcluster demo --type merge -p '{"spec":{"chunk":{"replicas":8}}}'
kube wait -n "$NS" statefulset/demo-chunk --for=jsonpath='{.status.readyReplicas}'=8 --timeout="$TIMEOUT"
# The operator starts a rebalance only once both new servers have registered.
wait_for "the RebalanceStarted Event" has_event "RebalanceStarted "
kube wait -n "$NS" dogcluster/demo --for=condition=Ready --timeout="$TIMEOUT"
kube wait -n "$NS" dogcluster/demo --for=condition=Rebalancing=false --timeout="$TIMEOUT"
kube get -n "$NS" dogcluster demo
read_back "8 chunk servers, rebalanced"

log "scale chunk servers 8 -> 6: drain, wait, shrink, remove, keep the claim; one at a time"
kube patch -n "$NS" dogcluster demo --type merge -p '{"spec":{"chunk":{"replicas":6}}}'
wait_for "demo-chunk-7 to start draining" has_event "DrainStarted demo-chunk-7"
# Replicas stay at 8 until demo-chunk-7 is empty; the data stays readable meanwhile.
[ "$(kube get -n "$NS" statefulset demo-chunk -o jsonpath='{.spec.replicas}')" -ge 7 ] \
  || die "replicas lowered before demo-chunk-7 was drained"
read_back "demo-chunk-7 draining"
kube wait -n "$NS" statefulset/demo-chunk --for=jsonpath='{.spec.replicas}'=6 --timeout="$TIMEOUT"
wait_for "demo-chunk-6 to be removed from the registry" has_event "NodeRemoved demo-chunk-6"
wait_for "no chunk server draining" no_drain
kube wait -n "$NS" dogcluster/demo --for=jsonpath='{.status.chunk.ready}'=6/6 --timeout="$TIMEOUT"
kube wait -n "$NS" dogcluster/demo --for=condition=Ready --timeout="$TIMEOUT"
kube wait -n "$NS" dogcluster/demo --for=condition=Draining=false --timeout="$TIMEOUT"
expected="DrainStarted demo-chunk-7
Drained demo-chunk-7
ReplicasLowered demo-chunk-7
NodeRemoved demo-chunk-7
ClaimKept data-demo-chunk-7
DrainStarted demo-chunk-6
Drained demo-chunk-6
ReplicasLowered demo-chunk-6
NodeRemoved demo-chunk-6
ClaimKept data-demo-chunk-6"
actual="$(scaling_events)"
[ "$actual" = "$expected" ] || die "scale-down steps out of order:
$actual
--- expected
$expected"
# examples/dogcluster.yaml has pvcRetention.whenScaled: Retain.
kube get -n "$NS" pvc data-demo-chunk-6 data-demo-chunk-7 >/dev/null || die "retained claims are gone"
in_client 'dogfs admin nodes' || true
read_back "back to 6 chunk servers"

log "scale chunk servers 6 -> 7: the retained claim comes back as a new server"
kube patch -n "$NS" dogcluster demo --type merge -p '{"spec":{"chunk":{"replicas":7}}}'
kube wait -n "$NS" statefulset/demo-chunk --for=jsonpath='{.status.readyReplicas}'=7 --timeout="$TIMEOUT"
kube wait -n "$NS" dogcluster/demo --for=condition=Ready --timeout="$TIMEOUT"
read_back "7 chunk servers, one rejoined"

log "scale chunk servers 7 -> 6 again"
kube patch -n "$NS" dogcluster demo --type merge -p '{"spec":{"chunk":{"replicas":6}}}'
kube wait -n "$NS" statefulset/demo-chunk --for=jsonpath='{.spec.replicas}'=6 --timeout="$TIMEOUT"
wait_for "no chunk server draining" no_drain
kube wait -n "$NS" dogcluster/demo --for=jsonpath='{.status.chunk.ready}'=6/6 --timeout="$TIMEOUT"
kube wait -n "$NS" dogcluster/demo --for=condition=Ready --timeout="$TIMEOUT"
read_back "6 chunk servers"

log "an invalid spec is refused on admission"
if kube patch -n "$NS" dogcluster demo --type merge -p '{"spec":{"chunk":{"replicas":5}}}' 2>/tmp/e2e-invalid; then
  die "chunk.replicas=5 (< k+m) was accepted"
fi
grep -q "chunk.replicas must be at least erasure.k + erasure.m" /tmp/e2e-invalid || die "unexpected error: $(cat /tmp/e2e-invalid)"
if kube patch -n "$NS" dogcluster demo --type merge -p '{"spec":{"erasure":{"k":3}}}' 2>/dev/null; then
  die "changing the erasure scheme was accepted"
fi

log "delete the DogCluster; owned objects go with it"
kube delete -n "$NS" dogcluster demo --wait=true --timeout="$TIMEOUT"
kube wait -n "$NS" --for=delete statefulset/demo-meta statefulset/demo-chunk --timeout=120s

log "kind e2e passed"
