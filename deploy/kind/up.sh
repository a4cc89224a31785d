#!/usr/bin/env bash
# Create the kind cluster (deploy/kind/cluster.yaml) and give its GPU node GPUs to schedule.
# GPU_MODE chooses how:
#   patch (default)  nvidia.com/gpu patched onto the node's status as an extended resource:
#                    no extra chart, no hardware; CPU images do the work
#   fake             Run:ai's fake-gpu-operator Helm chart (a fake device plugin); FGO_VERSION
#                    pins its chart version
#   nvkind           real GPUs through NVIDIA's nvkind and the NVIDIA device plugin (a machine
#                    with NVIDIA GPUs, driver and the NVIDIA container toolkit; README)
# GPUS: GPUs to advertise on the test node (default 4).
set -euo pipefail
# shellcheck source=deploy/kind/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

mode=${GPU_MODE:-patch}
gpus=${GPUS:-4}
need_docker
need_kind
need_kubectl
case "$mode" in
  patch | fake) ;;
  nvkind) need nvkind "go install github.com/NVIDIA/nvkind/cmd/nvkind@latest (README: Run on kind)" ;;
  *) die "GPU_MODE must be patch, fake or nvkind (got $mode)" ;;
esac

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "kind cluster $CLUSTER exists"
elif [[ $mode == nvkind ]]; then
  # nvkind creates the cluster from its own template: one worker per GPU group it finds.
  nvkind cluster create --name "$CLUSTER"
else
  kind create cluster --name "$CLUSTER" --config "$ROOT/deploy/kind/cluster.yaml" --wait 120s
fi

gpu_nodes() {
  kubectl --context "$CONTEXT" get nodes -l nasloop.io/gpu-node=true -o name
}

case "$mode" in
  patch)
    for node in $(gpu_nodes); do
      kubectl --context "$CONTEXT" patch "$node" --subresource=status --type=json \
        -p "[{\"op\": \"add\", \"path\": \"/status/capacity/nvidia.com~1gpu\", \"value\": \"$gpus\"}]"
    done
    ;;
  fake)
    helm=$(helm_bin)
    version_args=()
    [[ -n ${FGO_VERSION:-} ]] && version_args=(--version "$FGO_VERSION")
    "$helm" upgrade --install gpu-operator \
      oci://ghcr.io/run-ai/fake-gpu-operator/fake-gpu-operator "${version_args[@]}" \
      --kube-context "$CONTEXT" --namespace gpu-operator --create-namespace \
      --set "topology.nodePools.default.gpuCount=$gpus" --wait --timeout 300s
    ;;
  nvkind)
    helm=$(helm_bin)
    for node in $(kubectl --context "$CONTEXT" get nodes -o name | grep -v control-plane); do
      kubectl --context "$CONTEXT" label --overwrite "$node" nasloop.io/gpu-node=true
      kubectl --context "$CONTEXT" taint --overwrite "$node" nvidia.com/gpu=present:NoSchedule
    done
    "$helm" repo add nvdp https://nvidia.github.io/k8s-device-plugin --force-update
    "$helm" upgrade --install nvidia-device-plugin nvdp/nvidia-device-plugin \
      --kube-context "$CONTEXT" --namespace nvidia --create-namespace --wait --timeout 300s
    ;;
esac

# The GPU node must now offer nvidia.com/gpu to the scheduler.
for _ in $(seq 60); do
  offered=$(kubectl --context "$CONTEXT" get nodes -l nasloop.io/gpu-node=true \
    -o jsonpath='{.items[*].status.allocatable.nvidia\.com/gpu}')
  [[ -n $offered ]] && break
  sleep 5
done
[[ -n ${offered:-} ]] || die "the GPU node offers no nvidia.com/gpu (GPU_MODE=$mode)"
echo "kind cluster $CLUSTER is up; GPU node allocatable nvidia.com/gpu: $offered"
