#!/bin/sh
# Install into the image's virtual environment (/opt/nasloop), in a build stage:
#   pip-install.sh reqs [EXTRA...]   the dependencies of nasloop's core and of these extras
#   pip-install.sh pkgs PKG...       these packages (each pinned)
#   pip-install.sh self              nasloop itself from /src (its dependencies already there)
#   pip-install.sh view [--add REQ]... EXTRA...
#                                    only the distributions the strict sandbox allows
#                                    (/build/view.py's ALLOWED) at these extras' pins, with
#                                    their requirements (the evaluation pod's environment)
#   pip-install.sh pod-source        the source in /src (nasloop, services/evaluator) copied into
#                                    the environment's site-packages, then pip removed from it
#   pip-install.sh check-torch       fail unless torch is a CUDA build and torchvision's compiled
#                                    operators work beside it (the GPU images; runs on the CPU)
# What the build may pass: a TLS CA bundle as the build secret `ca` (never stored in a layer),
# a local wheel folder (PIP_FIND_LINKS, read by pip itself) and an extra index
# (TORCH_INDEX_URL, e.g. PyTorch's CPU index for the CPU images). pip writes no cache.
set -eu
mode=$1
shift
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off
if [ -f /run/secrets/ca ]; then
  export PIP_CERT=/run/secrets/ca
fi
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  export PIP_EXTRA_INDEX_URL="$TORCH_INDEX_URL"
fi
pip=/opt/nasloop/bin/pip
case "$mode" in
  reqs)
    python3 /build/requirements.py /build/pyproject.toml "$@" >/tmp/requirements.txt
    "$pip" install -r /tmp/requirements.txt
    rm -f /tmp/requirements.txt
    ;;
  view)
    python3 /build/requirements.py /build/pyproject.toml --view /build/view.py "$@" \
      >/tmp/requirements.txt
    "$pip" install -r /tmp/requirements.txt
    rm -f /tmp/requirements.txt
    ;;
  pkgs) "$pip" install "$@" ;;
  self) "$pip" install --no-deps /src ;;
  pod-source)
    # Plain copies, not an installed distribution: no console script, nothing else of nasloop.
    site=$(/opt/nasloop/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    cp -R /src/. "$site/"
    rm -rf /src
    "$pip" uninstall -q -y pip
    ;;
  check-torch)
    # About half of LEMUR's classifiers use torchvision.ops. A CPU torch wheel that slipped in,
    # or a torchvision built for another torch ("operator torchvision::nms does not exist"),
    # stops here. smoke.sh runs this in the final GPU images too.
    /opt/nasloop/bin/python - <<'EOF'
import sys

import torch
import torchvision
from torchvision import ops

problems = []
if not torch.version.cuda:
    problems.append(f"torch {torch.__version__} is not a CUDA build")
boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [20.0, 20.0, 30.0, 30.0]])
try:
    kept = ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5).tolist()
    if kept != [0, 2]:
        problems.append(f"torchvision.ops.nms gave {kept}, not [0, 2]")
    ops.roi_align(torch.ones(1, 1, 8, 8), [boxes[:1]], output_size=2)
except Exception as e:
    problems.append(f"torchvision's operators fail: {type(e).__name__}: {e}")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, torchvision {torchvision.__version__}")
sys.exit("; ".join(problems) or None)
EOF
    ;;
  *)
    echo "pip-install.sh: unknown mode $mode (reqs, view, pkgs, self, pod-source or check-torch)" >&2
    exit 2
    ;;
esac
