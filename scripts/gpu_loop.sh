#!/usr/bin/env bash
# The loop end to end on one GPU (issue 20, item 6), where the Python environment has CUDA torch,
# transformers and peft but no vLLM: the generator on its transformers backend, the trainer and
# the evaluator on CUDA, CYCLES x CANDIDATES of the `local` preset (default 2 x 64), timed
# against BUDGET_S (default 480 s: the target is under 8 minutes). It reports candidates per
# GPU-hour, the GPU's busy share (nvidia-smi sampled every 500 ms) and where the rest of the time
# went (per-step seconds from the run's cycle summaries; scripts/gpu_loop_report.py).
#
# Untimed first: the wheels scripts/gpu_prepare.sh carried in .whl/ (nasloop's dependencies
# the machine lacks; LOOP=1 there adds the loop's: S3 client, MinHash, ...) installed, its
# bubblewrap (.gpu/) installed and probed (the evaluator's strict sandbox needs it; without it the
# run uses sandbox=weak and says so), then, when missing in the store, the base model (`nasloop
# bootstrap-model`; carry a store that has models/bootstrap-default to skip it: ~14 min on 2 CPU
# cores) and the seed corpus.
#
# Usage: scripts/gpu_loop.sh    Environment (defaults): PYTHON (python3), OUT (./gpu-loop-out),
#   STORE (./.nasloop/store: a file store), DEVICE (cuda; cpu runs the same steps on the CPU,
#   e.g. DEVICE=cpu CANDIDATES=8 BASE_MODEL=models/bootstrap-tiny to check the script without
#   a GPU), CYCLES (2), CANDIDATES (64), BASE_MODEL (models/bootstrap-default), BUDGET_S (480:
#   the run is stopped after it; its records so far are still reported), SANDBOX (strict if
#   bwrap runs, else weak), GPU_LOOP_WHEELS (.whl). Writes $OUT/gpu_loop.log, gpu_samples.csv,
#   report.txt, gpu_loop.json.
# Exit status: 0 when the run finished its cycles within BUDGET_S, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-$PWD/gpu-loop-out}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_loop.log") 2>&1
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
CYCLES="${CYCLES:-2}"
CANDIDATES="${CANDIDATES:-64}"
BASE_MODEL="${BASE_MODEL:-models/bootstrap-default}"
BUDGET_S="${BUDGET_S:-480}"
STORE="$(realpath -m "${STORE:-.nasloop/store}")"
RUN="gpu-loop-$(date -u +%Y%m%d-%H%M%S)"
T0=$SECONDS
# shellcheck source=scripts/gpu_carry.sh
source scripts/gpu_carry.sh

banner "machine"
uname -srm
"$PY" --version
timeout 20 nvidia-smi -L 2>/dev/null || echo "nvidia-smi: not available"
banner "wheels"
install_carried_wheels "${GPU_LOOP_WHEELS:-.whl}"
"$PY" - "$DEVICE" <<'EOF' || exit 2
import importlib.metadata as md
import importlib.util
import sys

for name in ("torch", "transformers", "peft", "tokenizers", "grpcio", "minio", "datasketch",
             "pydantic", "protobuf", "pyseccomp"):
    try:
        print(f"  {name:<14} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name:<14} MISSING")
print("  vllm          ", "present (not used: backend transformers)"
      if importlib.util.find_spec("vllm") else "absent")
import torch  # noqa: E402

import services.cli  # noqa: E402,F401  (nasloop and its dependencies import)

if sys.argv[1] == "cuda":
    if not torch.cuda.is_available():
        sys.exit("DEVICE=cuda but torch sees no GPU (torch %s)" % torch.__version__)
    print("  GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
EOF

if [[ -z ${SANDBOX:-} ]]; then
  banner "bubblewrap"
  probe_bubblewrap
  if [[ $SANDBOX == weak ]]; then
    loud "STRICT SANDBOX UNAVAILABLE: $WHY" \
      "the evaluator runs sandbox=weak: the figures are the loop's, not the strict sandbox's"
  else
    SANDBOX=strict
  fi
fi
export NASLOOP_STORE__URL="file://$STORE"
export NASLOOP_GENERATOR__BACKEND=transformers NASLOOP_GENERATOR__DEVICE="$DEVICE"
export NASLOOP_TRAINER__DEVICE="$DEVICE" NASLOOP_EVALUATOR__DEVICE="$DEVICE"
export NASLOOP_EVALUATOR__SANDBOX="$SANDBOX"
echo "run $RUN: $CYCLES cycles x $CANDIDATES candidates, $BASE_MODEL, device $DEVICE," \
  "sandbox $SANDBOX, store $STORE, budget ${BUDGET_S}s"

banner "inputs (untimed)"
# The base model and the seed corpus, made here when the store lacks them (nasloop run would make
# them inside the timed part).
"$PY" - "$BASE_MODEL" <<'EOF' || exit 2
import sys

from nasloop.config import load_config
from services.controller.runspec import load_spec
from nasloop.store import open_store
from services.controller.cli.local_run import ensure_inputs

spec = load_spec("local", overrides=[f"base_model={sys.argv[1]}"])
ensure_inputs(open_store(load_config().store), spec, sys.stdout)
print("inputs ready")
EOF

banner "the loop (timed)"
samples="$OUT/gpu_samples.csv"
: >"$samples"
smi_pid=""
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits \
    -lms 500 >"$samples" 2>/dev/null &
  smi_pid=$!
fi
start=$SECONDS
timeout --signal=INT --kill-after=60 "$BUDGET_S" "$PY" -m services.cli run --preset local \
  --name "$RUN" --no-baseline --set "cycles=$CYCLES" --set "candidates_per_cycle=$CANDIDATES" \
  --set "base_model=$BASE_MODEL"
status=$?
wall=$((SECONDS - start))
[[ -n $smi_pid ]] && kill "$smi_pid" 2>/dev/null
echo "nasloop run exited with $status after ${wall}s"

banner "figures"
"$PY" scripts/gpu_loop_report.py "$STORE" "$RUN" "$wall" "$samples" | tee "$OUT/report.txt"
sed -n 's/^gpu_loop: //p' "$OUT/report.txt" >"$OUT/gpu_loop.json"
if [[ $status -eq 0 && $wall -le $BUDGET_S ]]; then
  echo "PASS: $CYCLES cycles x $CANDIDATES candidates in ${wall}s (budget ${BUDGET_S}s)"
  exit 0
fi
echo "FAIL: status $status, ${wall}s (budget ${BUDGET_S}s)"
exit 1
