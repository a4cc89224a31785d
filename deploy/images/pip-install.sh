#!/bin/sh
# Install into the image's virtual environment (/opt/nasloop), in a build stage:
#   pip-install.sh reqs [EXTRA...]   the dependencies of nasloop's core and of these extras
#   pip-install.sh pkgs PKG...       these packages (each pinned)
#   pip-install.sh self              nasloop itself from /src (its dependencies already there)
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
  pkgs) "$pip" install "$@" ;;
  self) "$pip" install --no-deps /src ;;
  *)
    echo "pip-install.sh: unknown mode $mode (reqs, pkgs or self)" >&2
    exit 2
    ;;
esac
