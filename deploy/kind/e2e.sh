#!/usr/bin/env bash
# End to end in the kind cluster (after make kind-up kind-load): deploy the chart, publish the
# tiny test model to the bundled store, then run the cluster tests:
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
cd "$ROOT" # the publishing step and the tests import from tests/
full=$FULLNAME
model=models/tiny-e2e
kc=(kubectl --context "$CONTEXT" -n "$NAMESPACE")
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
kind get kubeconfig --name "$CLUSTER" >"$work/kubeconfig"

# forward SERVICE LOCAL_PORT REMOTE_PORT: in the background, once the port answers here.
forward() {
  "${kc[@]}" port-forward "svc/$1" "$2:$3" >"$work/forward-$1.log" 2>&1 &
  pids+=($!)
  local pid=$!
  for _ in $(seq 60); do
    (: <"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  die "port-forward to svc/$1 did not come up: $(cat "$work/forward-$1.log")"
}

# 1. The chart, without waiting for the generator: its model is published below.
HELM_WAIT=0 "$ROOT/deploy/kind/deploy.sh" --set "model.storeKey=$model" "$@"
"${kc[@]}" rollout status "deployment/$full-store" --timeout 5m
forward "$full-store" 19000 9000

secret() {
  "${kc[@]}" get secret "$full-store" -o "jsonpath={.data.$1}" | base64 -d
}
export NASLOOP_STORE__URL=s3://nasloop NASLOOP_STORE__ENDPOINT=127.0.0.1:19000
NASLOOP_STORE__ACCESS_KEY=$(secret access_key)
NASLOOP_STORE__SECRET_KEY=$(secret secret_key)
export NASLOOP_STORE__ACCESS_KEY NASLOOP_STORE__SECRET_KEY

# 2. The tiny model, published as the chart's generator expects it; then the generator restarts.
"$python" - "$model" <<'PY'
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, "tests")
from tiny_lm import publish_tiny_lm  # noqa: E402

from nasloop.config import load_config  # noqa: E402
from nasloop.store import open_store  # noqa: E402

store = open_store(load_config().store)
name = sys.argv[1].removeprefix("models/")
if store.get_manifest(f"models/{name}") is None:
    with tempfile.TemporaryDirectory() as tmp:
        print("published", publish_tiny_lm(store, name, Path(tmp)))
PY
"${kc[@]}" rollout restart "deployment/$full-generator"
for d in $("${kc[@]}" get deployments -o name); do
  "${kc[@]}" rollout status "$d" --timeout 10m
done
# The controller is forwarded once it runs (a port-forward to a Service without a ready pod fails).
forward "$full-controller" 15055 50055

# 3. The cluster tests.
export KUBECONFIG="$work/kubeconfig"
export NASLOOP_EVALUATOR__KUBERNETES__NAMESPACE="$NAMESPACE"
export NASLOOP_EVALUATOR__KUBERNETES__IMAGE
NASLOOP_EVALUATOR__KUBERNETES__IMAGE=$(image_ref "evaluator-$VARIANT")
export NASLOOP_EVALUATOR__KUBERNETES__IMAGE_PULL_POLICY=Never
# CPU images: the candidate trains on CPU (the test GPU node has no GPU to offer a container).
export NASLOOP_EVALUATOR__KUBERNETES__GPUS
if [[ $VARIANT == gpu ]]; then
  NASLOOP_EVALUATOR__KUBERNETES__GPUS=1
  export NASLOOP_EVALUATOR__KUBERNETES__RUNTIME_CLASS=nvidia # nvkind's, as deploy.sh sets it
else
  NASLOOP_EVALUATOR__KUBERNETES__GPUS=0
fi
export NASLOOP_EVALUATOR__KUBERNETES__SERVICE_ACCOUNT="$full-sandbox"
export NASLOOP_EVALUATOR__KUBERNETES__POD_STORE_ENDPOINT="$full-store:9000"
export NASLOOP_E2E_CONTROLLER=127.0.0.1:15055 NASLOOP_E2E_MODEL="$model"
"$python" -m pytest -q -m cluster tests/cluster
