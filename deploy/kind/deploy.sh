#!/usr/bin/env bash
# Install (or upgrade) the chart into the kind cluster with values-kind.yaml, in a namespace
# that enforces Pod Security "restricted", and wait until every Deployment is available
# (HELM_WAIT=0: do not wait). The images are the CPU variants (IMAGE_VARIANT=gpu: the GPU ones,
# for real GPUs through nvkind).
# Extra arguments go to helm (e.g. --set run.enabled=true --set run.spec.name=tiny-1).
set -euo pipefail
# shellcheck source=deploy/kind/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need_cluster
need_kubectl
helm=$(helm_bin)
kc=(kubectl --context "$CONTEXT")
"${kc[@]}" create namespace "$NAMESPACE" --dry-run=client -o yaml | "${kc[@]}" apply -f -
"${kc[@]}" label --overwrite namespace "$NAMESPACE" \
  pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/warn=restricted
chart="$ROOT/deploy/helm/nasloop"
# Real GPUs (nvkind): the NVIDIA runtime is the RuntimeClass "nvidia", not containerd's default.
variant_args=(--set "image.variant=$VARIANT")
[[ $VARIANT == gpu ]] && variant_args+=(--set gpu.runtimeClassName=nvidia)
wait_args=(--wait --timeout 15m)
[[ ${HELM_WAIT:-1} == 0 ]] && wait_args=()
"$helm" upgrade --install "$RELEASE" "$chart" --kube-context "$CONTEXT" \
  --namespace "$NAMESPACE" -f "$chart/values-kind.yaml" "${variant_args[@]}" \
  ${wait_args[@]+"${wait_args[@]}"} "$@"
"${kc[@]}" -n "$NAMESPACE" get pods -o wide
