#!/usr/bin/env bash
# Build the images (the CPU variants; IMAGE_VARIANT=gpu the GPU ones) unless SKIP_BUILD=1, and
# load them into the kind cluster's nodes. With Docker they are loaded directly; with podman or
# buildah through a docker-archive that names each image as the chart does: their local names
# carry podman's "localhost/" prefix (podman save would keep it, and the nodes would hold
# localhost/nasloop/... while pods ask for docker.io/nasloop/..., never pulled).
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
  rm -f "$work/image.tar"
  case "$tool" in
    docker) kind load docker-image --name "$CLUSTER" "$ref" ;;
    podman | buildah)
      "$tool" push "$ref" "docker-archive:$work/image.tar:$ref"
      kind load image-archive --name "$CLUSTER" "$work/image.tar"
      ;;
    *) die "cannot load images built with $tool (docker, podman or buildah)" ;;
  esac
done
