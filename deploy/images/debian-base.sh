#!/usr/bin/env bash
# Build a minimal Debian image with Python (the images' BASE) without any registry:
# mmdebstrap writes a root filesystem from Debian's package archive, buildah imports it.
# Usage: debian-base.sh [IMAGE]   (default localhost/nasloop-base:bookworm; kept when present,
# FORCE=1 rebuilds). For machines that cannot pull python:3.11-slim-bookworm.
set -euo pipefail
# shellcheck source=deploy/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

image=${1:-localhost/nasloop-base:bookworm}
need buildah "apt-get install buildah"
need mmdebstrap "apt-get install mmdebstrap"
if [[ -z ${FORCE:-} ]] && buildah inspect --type image "$image" >/dev/null 2>&1; then
  echo "$image exists (FORCE=1 rebuilds it)"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
nice -n 10 mmdebstrap --quiet --variant=minbase \
  --include=python3,python3-venv,ca-certificates bookworm "$work/rootfs.tar"
ctr=$(buildah from scratch)
buildah add --quiet "$ctr" "$work/rootfs.tar" / >/dev/null
buildah config --env LANG=C.UTF-8 --cmd /bin/bash "$ctr"
buildah commit --quiet --rm "$ctr" "$image" >/dev/null
echo "built $image"
