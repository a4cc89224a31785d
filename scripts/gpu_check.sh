#!/usr/bin/env bash
# The evaluator's GPU check (issue 11) on a lent GPU machine: no network there, Python 3.12 with
# its own CUDA torch. Prepare here first with scripts/gpu_prepare.sh and carry .whl and .gpu.
#
# 1. installs the carried wheels (.whl/) into the machine's Python environment (the sandbox
#    workers and the strict sandbox's view see only that environment, not a PYTHONPATH);
# 2. installs the carried bubblewrap (.gpu/) where none is, and probes it; the strict sandbox
#    is tried when the probe passes, else the check runs with sandbox=weak and says so;
# 3. runs `pytest -m gpu tests/gpu` (tests/gpu/test_evaluator_cuda.py) and writes to $OUT:
#    gpu_check.log (everything printed), gpu_check.json (statuses, accuracies, seconds per case
#    and device, the sandbox mode and why), junit.xml.
#
# Usage: scripts/gpu_check.sh   (OUT defaults to ./gpu-check-out; GPU_CHECK_TIMEOUT, seconds
# for pytest, defaults to 300; PYTHON defaults to python3). Exit status: pytest's (124 when it
# ran out of time).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!
PY="${PYTHON:-python3}"
PYTEST_TIMEOUT="${GPU_CHECK_TIMEOUT:-300}"
WHL="${GPU_CHECK_WHEELS:-.whl}"  # another (empty) folder skips the install, e.g. on a CPU machine
T0=$SECONDS
# shellcheck source=scripts/gpu_carry.sh
source scripts/gpu_carry.sh

banner "machine"
uname -srm
id
"$PY" --version
timeout 20 nvidia-smi -L || echo "nvidia-smi: not available"
find /dev -maxdepth 1 -name 'nvidia*' 2>/dev/null | head -8 | tr '\n' ' '; echo
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
ldconfig -p 2>/dev/null | grep -E 'libcuda\.so|libseccomp' || echo "ldconfig: no libcuda/libseccomp"

banner "wheels"
install_carried_wheels "$WHL"
timeout 120 "$PY" - <<'EOF'
import importlib.metadata as md
for name in ("torch", "torchvision", "numpy", "scikit-learn", "pydantic", "pydantic-core",
             "protobuf", "grpcio", "pyseccomp", "pyyaml", "packaging", "pytest",
             "pytest-timeout"):
    try:
        print(f"  {name:<16} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name:<16} MISSING")
import services.evaluator.engine, services.evaluator.pool, services.evaluator.worker  # noqa
from services.evaluator import seccomp_filter
import torch
print("evaluator imports: ok; seccomp filter:", seccomp_filter.available())
print("torch", torch.__version__, "cuda:", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
echo "import check exit status: $?"

banner "bubblewrap"
probe_bubblewrap
if [ "$SANDBOX" = weak ]; then
  loud "STRICT SANDBOX UNAVAILABLE: $WHY" \
    "THIS CHECK RUNS WITH sandbox=weak (rlimits, seccomp filter, uid drop; no namespaces)"
else
  echo "sandbox: strict is tried first (tests fall back to weak, loudly, if it fails on cuda)"
fi

banner "pytest -m gpu tests/gpu (limit ${PYTEST_TIMEOUT}s)"
# --noconftest: tests/conftest.py imports the object-store client (minio), absent there and
# not needed by these tests.
GPU_CHECK_SANDBOX="$SANDBOX" GPU_CHECK_JSON="$OUT/gpu_check.json" PYTHONUNBUFFERED=1 \
  timeout -k 15 "$PYTEST_TIMEOUT" "$PY" -m pytest -q -s -rfEs -m gpu tests/gpu --noconftest \
  -p no:cacheprovider -o faulthandler_timeout=240 --junitxml="$OUT/junit.xml"
rc=$?

banner "summary"
if [ -f "$OUT/gpu_check.json" ]; then
  timeout 30 "$PY" - "$OUT/gpu_check.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"sandbox: {d.get('sandbox')}  (asked {d.get('sandbox_asked')})  gpu: {d.get('gpu')}")
if d.get("sandbox_note"):
    print("sandbox note:", d["sandbox_note"])
print("worker start s:", d.get("worker_start_s"), " cpu/cuda accuracy gap:",
      d.get("good_accuracy_gap"), " adversarial batch wall s:", d.get("adversarial_batch_wall_s"))
print(f"{'case':<32}{'cpu (status accuracy seconds)':<46}cuda")
for name, by in d["cases"].items():
    cells = []
    for dev in ("cpu", "cuda"):
        r = by.get(dev)
        wall = "-" if r is None or r["wall_s"] is None else f"{r['wall_s']:.2f}s"
        cells.append("-" if r is None else
                     f"{r['status'][7:]} {r['accuracy']:.3f} train {r['train_s']:.2f}s wall {wall}")
    print(f"{name:<32}{cells[0]:<46}{cells[1]}")
EOF
else
  echo "no results file (pytest did not get as far as writing it)"
fi
if [ "$rc" = 0 ]; then
  echo "GPU CHECK: PASSED (sandbox: $(grep -o '"sandbox": "[a-z]*"' "$OUT/gpu_check.json" 2>/dev/null))"
else
  echo "GPU CHECK: FAILED (pytest exit status $rc)"
fi
echo "total ${SECONDS}s"
exec >&- 2>&-  # let tee finish the log before the files under $OUT are collected
wait "$TEE_PID" 2>/dev/null || sleep 1
exit "$rc"
