#!/usr/bin/env bash
# Create the kind cluster (deploy/kind/cluster.yaml) and give its GPU node GPUs to schedule.
# GPU_MODE chooses how:
#   patch (default)  nvidia.com/gpu patched onto the node's status as an extended resource:
#                    no extra chart, no hardware; CPU images do the work
#   fake             Run:ai's fake-gpu-operator Helm chart (a fake device plugin); FGO_VERSION
#                    pins its chart version
#   nvkind           real GPUs through NVIDIA's nvkind and the NVIDIA device plugin (a machine
#                    with NVIDIA GPUs, driver and the NVIDIA container toolkit; README); run the
#                    GPU images there (IMAGE_VARIANT=gpu for load.sh, deploy.sh and e2e.sh)
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
  # nvkind creates the cluster from its own template: one worker per GPU group it finds. It can
  # exit non-zero on benign umount errors (CDI mode; its own CI tolerates them): what counts
  # is that the cluster exists and its nodes become Ready.
  nvkind cluster create --name "$CLUSTER" ||
    echo "warning: nvkind cluster create exited non-zero; checking the cluster" >&2
  kind get clusters 2>/dev/null | grep -qx "$CLUSTER" || die "nvkind did not create the kind cluster $CLUSTER"
else
  kind create cluster --name "$CLUSTER" --config "$ROOT/deploy/kind/cluster.yaml" --wait 120s
fi
kubectl --context "$CONTEXT" wait --for=condition=Ready node --all --timeout 300s

gpu_nodes() {
  kubectl --context "$CONTEXT" get nodes -l nasloop.io/gpu-node=true -o name
}

case "$mode" in
  patch)
    nodes=$(gpu_nodes)
    [[ -n $nodes ]] || die "no node labelled nasloop.io/gpu-node=true (was cluster $CLUSTER made from deploy/kind/cluster.yaml?)"
    for node in $nodes; do
      # Capacity through the status subresource; the kubelet derives allocatable from it.
      kubectl --context "$CONTEXT" patch "$node" --subresource=status --type=json \
        -p "[{\"op\": \"add\", \"path\": \"/status/capacity/nvidia.com~1gpu\", \"value\": \"$gpus\"}]"
    done
    ;;
  fake)
    # The chart's device plugin runs on the nodes labelled run.ai/simulated-gpu-node-pool=default
    # (cluster.yaml) and tolerates the nvidia.com/gpu taint.
    helm=$(helm_bin)
    version_args=()
    [[ -n ${FGO_VERSION:-} ]] && version_args=(--version "$FGO_VERSION")
    "$helm" upgrade --install gpu-operator \
      oci://ghcr.io/run-ai/fake-gpu-operator/fake-gpu-operator ${version_args[@]+"${version_args[@]}"} \
      --kube-context "$CONTEXT" --namespace gpu-operator --create-namespace \
      --set "topology.nodePools.default.gpuCount=$gpus" --wait --timeout 300s
    ;;
  nvkind)
    helm=$(helm_bin)
    workers=$(kubectl --context "$CONTEXT" get nodes -o name | grep -v control-plane) ||
      die "nvkind made no worker node"
    for node in $workers; do
      # nvidia.com/gpu.present: the device plugin chart's node affinity (no NFD here) requires it.
      kubectl --context "$CONTEXT" label --overwrite "$node" nasloop.io/gpu-node=true nvidia.com/gpu.present=true
      kubectl --context "$CONTEXT" taint --overwrite "$node" nvidia.com/gpu=present:NoSchedule
      # nvkind registers containerd's nvidia runtime as the RuntimeClass "nvidia", not as the
      # default: the device plugin below and the chart's GPU pods (deploy.sh sets
      # gpu.runtimeClassName=nvidia with IMAGE_VARIANT=gpu) name it.
    done
    kubectl --context "$CONTEXT" wait --for=condition=Ready node --all --timeout 300s
    "$helm" repo add nvdp https://nvidia.github.io/k8s-device-plugin --force-update
    "$helm" upgrade --install nvidia-device-plugin nvdp/nvidia-device-plugin \
      --kube-context "$CONTEXT" --namespace nvidia --create-namespace \
      --set runtimeClassName=nvidia --wait --timeout 300s
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
