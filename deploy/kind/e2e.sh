#!/usr/bin/env bash
# End to end in the kind cluster (after make kind-up kind-load): deploy the chart (deploy.sh,
# which publishes the tiny test model to the bundled store first), then run the cluster tests:
#   tests/cluster/test_kind_evaluator.py  evaluation Jobs created straight from this machine
#   tests/cluster/test_kind_cycle.py      one tiny cycle, started and checked over the
#                                         controller's gRPC API
# The store and the controller are reached through kubectl port-forward; the tests talk to the
# kind cluster's API through a kubeconfig of its own (whatever kubectl's current context is).
# IMAGE_VARIANT=gpu (real GPUs through nvkind): the GPU images, and the evaluation Jobs ask for
# a GPU. Extra arguments go to deploy.sh (helm).
set -euo pipefail
# shellcheck source=deploy/kind/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need_cluster
need_kubectl
python="$ROOT/.venv/bin/python"
[[ -x $python ]] || die "run make setup first (the tests run in .venv)"
cd "$ROOT" # the tests import from tests/
model=${KIND_MODEL:-models/tiny-e2e}
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
kind get kubeconfig --name "$CLUSTER" >"$work/kubeconfig"

# 1. The chart, its model published before the generator starts, every Deployment available.
KIND_MODEL=$model "$ROOT/deploy/kind/deploy.sh" "$@"

# 2. The store (the tests read records and adapters) and the controller, forwarded here.
forward "$FULLNAME-store" 19000 9000 "$work/forward-store.log"
pids+=("$FORWARD_PID")
store_env 19000
forward "$FULLNAME-controller" 15055 50055 "$work/forward-controller.log"
pids+=("$FORWARD_PID")

# 3. The cluster tests.
export KUBECONFIG="$work/kubeconfig"
export NASLOOP_EVALUATOR__KUBERNETES__NAMESPACE="$NAMESPACE"
export NASLOOP_EVALUATOR__KUBERNETES__IMAGE
NASLOOP_EVALUATOR__KUBERNETES__IMAGE=$(image_ref "evaluator-pod-$VARIANT")
export NASLOOP_EVALUATOR__KUBERNETES__IMAGE_PULL_POLICY=Never
# CPU images: the candidate trains on CPU (the test GPU node has no GPU to offer a container).
export NASLOOP_EVALUATOR__KUBERNETES__GPUS
if [[ $VARIANT == gpu ]]; then
  NASLOOP_EVALUATOR__KUBERNETES__GPUS=1
  export NASLOOP_EVALUATOR__KUBERNETES__RUNTIME_CLASS=nvidia # nvkind's, as deploy.sh sets it
else
  NASLOOP_EVALUATOR__KUBERNETES__GPUS=0
fi
export NASLOOP_EVALUATOR__KUBERNETES__SERVICE_ACCOUNT="$FULLNAME-sandbox"
export NASLOOP_EVALUATOR__KUBERNETES__POD_STORE_ENDPOINT="$FULLNAME-store:9000"
export NASLOOP_E2E_CONTROLLER=127.0.0.1:15055 NASLOOP_E2E_MODEL="$model"
"$python" -m pytest -q -m cluster tests/cluster
