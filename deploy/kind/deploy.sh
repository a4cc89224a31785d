#!/usr/bin/env bash
# Install (or upgrade) the chart into the kind cluster with values-kind.yaml, in a namespace
# that enforces Pod Security "restricted", and wait until every Deployment is available
# (HELM_WAIT=0: do not wait). The images are the CPU variants (IMAGE_VARIANT=gpu: the GPU ones,
# for real GPUs through nvkind).
# The generator loads its base model from the bundled store (values-kind.yaml: model.source=store,
# KIND_MODEL, default models/tiny-e2e), so the model is published before the generator starts:
# on a first install everything but the generator is deployed, the tiny test model
# (tests/tiny_lm.py) is published to the store through a port-forward when it is not there yet,
# then the generator is deployed. PUBLISH_MODEL=0 skips that (a model you publish yourself, or
# another model.source: pass --set model.source=... then).
# Extra arguments go to helm (e.g. --set run.enabled=true --set run.spec.name=tiny-1).
set -euo pipefail
# shellcheck source=deploy/kind/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need_cluster
need_kubectl
helm=$(helm_bin)
model=${KIND_MODEL:-models/tiny-e2e}
python=${PYTHON:-$ROOT/.venv/bin/python}
kc=(kubectl --context "$CONTEXT")
"${kc[@]}" create namespace "$NAMESPACE" --dry-run=client -o yaml | "${kc[@]}" apply -f -
"${kc[@]}" label --overwrite namespace "$NAMESPACE" \
  pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/warn=restricted
chart="$ROOT/deploy/helm/nasloop"
# Real GPUs (nvkind): the NVIDIA runtime is the RuntimeClass "nvidia", not containerd's default.
variant_args=(--set "image.variant=$VARIANT")
[[ $VARIANT == gpu ]] && variant_args+=(--set gpu.runtimeClassName=nvidia)
install() {
  "$helm" upgrade --install "$RELEASE" "$chart" --kube-context "$CONTEXT" \
    --namespace "$NAMESPACE" -f "$chart/values-kind.yaml" "${variant_args[@]}" \
    --set "model.storeKey=$model" "$@"
}

if [[ ${PUBLISH_MODEL:-1} != 0 ]]; then
  [[ -x $python ]] || die "$python missing: run make setup first (it publishes the test model)"
  if ! "$helm" status "$RELEASE" --kube-context "$CONTEXT" --namespace "$NAMESPACE" >/dev/null 2>&1; then
    echo "first install: everything but the generator until $model is in the store"
    # (no run started either: its hook would start a run that has no generator yet)
    install "$@" --set generator.enabled=false --set run.enabled=false --wait --timeout 10m
  fi
  "${kc[@]}" -n "$NAMESPACE" rollout status "deployment/$FULLNAME-store" --timeout 5m
  work=$(mktemp -d)
  trap 'kill "${FORWARD_PID:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
  port=${STORE_PORT:-19000}
  forward "$FULLNAME-store" "$port" 9000 "$work/forward.log"
  store_env "$port"
  (cd "$ROOT" && "$python" - "$model" <<'PY')
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, "tests")
from tiny_lm import publish_tiny_lm  # noqa: E402

from nasloop.config import load_config  # noqa: E402
from nasloop.store import open_store  # noqa: E402

store = open_store(load_config().store)
key = sys.argv[1]
if store.get_manifest(key) is None:
    with tempfile.TemporaryDirectory() as tmp:
        print("published", publish_tiny_lm(store, key.removeprefix("models/"), Path(tmp)))
else:
    print(f"{key} is in the store")
PY
  kill "$FORWARD_PID" 2>/dev/null || true
fi
wait_args=(--wait --timeout 15m)
[[ ${HELM_WAIT:-1} == 0 ]] && wait_args=()
install ${wait_args[@]+"${wait_args[@]}"} "$@"
"${kc[@]}" -n "$NAMESPACE" get pods -o wide
