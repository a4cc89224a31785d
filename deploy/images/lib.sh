# shellcheck shell=bash
# Helpers shared by nasloop's deploy scripts (sourced, not run).

# die MESSAGE...: print to stderr and exit 1.
die() {
  echo "error: $*" >&2
  exit 1
}

# need TOOL HINT: fail early, with how to get TOOL, when it is not on PATH.
need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is required but not installed: $2"
}

# repo_root: the repository's top directory (the scripts live two or three levels below it).
repo_root() {
  git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel
}

# nasloop_version: the project version from pyproject.toml (the images' default tag).
nasloop_version() {
  sed -n 's/^version = "\(.*\)"$/\1/p' "$(repo_root)/pyproject.toml" | head -n1
}

# image_ref TARGET: the image a Dockerfile target is tagged as, e.g. evaluator-cpu →
# nasloop/evaluator:0.1.0-cpu and novelty → nasloop/novelty:0.1.0 (IMAGE_PREFIX, IMAGE_TAG).
image_ref() {
  local target=$1 prefix=${IMAGE_PREFIX:-nasloop} tag=${IMAGE_TAG:-$(nasloop_version)}
  case "$target" in
    *-cpu | *-gpu) echo "$prefix/${target%-*}:$tag-${target##*-}" ;;
    *) echo "$prefix/$target:$tag" ;;
  esac
}

# container_tool: docker (with a reachable engine), podman or buildah, in that order; BUILDER
# chooses one explicitly.
container_tool() {
  if [[ -n ${BUILDER:-} ]]; then
    need "$BUILDER" "install it or unset BUILDER"
    echo "$BUILDER"
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null 2>&1; then
    echo podman
  elif command -v buildah >/dev/null 2>&1; then
    echo buildah
  else
    die "no image builder: install Docker (with a running engine), podman or buildah" \
      "(Debian: apt-get install buildah)"
  fi
}
