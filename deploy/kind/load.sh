#!/usr/bin/env bash
# Build the CPU images (unless SKIP_BUILD=1) and load them into the kind cluster's nodes.
# With Docker they are loaded directly; with podman or buildah through an image archive.
set -euo pipefail
# shellcheck source=deploy/kind/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need_cluster
tool=$(container_tool)
if [[ -z ${SKIP_BUILD:-} ]]; then
  "$ROOT/deploy/images/build.sh" "${KIND_TARGETS[@]}"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "${KIND_TARGETS[@]}"; do
  ref=$(image_ref "$t")
  echo "== loading $ref into kind cluster $CLUSTER"
  case "$tool" in
    docker) kind load docker-image --name "$CLUSTER" "$ref" ;;
    podman) podman save --format docker-archive -o "$work/image.tar" "$ref" &&
      kind load image-archive --name "$CLUSTER" "$work/image.tar" ;;
    buildah) buildah push "$ref" "docker-archive:$work/image.tar:$ref" &&
      kind load image-archive --name "$CLUSTER" "$work/image.tar" ;;
  esac
  rm -f "$work/image.tar"
done
