#!/usr/bin/env bash
# Build nasloop's images with docker, podman or buildah (whichever is present; BUILDER chooses).
# Usage: build.sh [--platform OS/ARCH] [TARGET...]   default: every target (deploy/images/
# Dockerfile lists them) for this machine's platform. --platform (or PLATFORM) builds for another,
# e.g. linux/arm64 (the base must be published for it: the default base's digest is a
# multi-platform index; building for a foreign architecture needs QEMU's binfmt handlers).
# Environment: BASE (base image; default the Dockerfile's python:3.11-slim-bookworm, by digest),
# IMAGE_PREFIX (nasloop), IMAGE_TAG (the project version), PIP_CA (a CA bundle passed as the
# build secret `ca`; default: the `cert` of this machine's pip configuration, if any),
# WHEELS (a folder of local wheels mounted into the build; default: pip's `find-links`, if any;
# with it the CPU torch wheel comes from there instead of PyTorch's index).
set -euo pipefail
# shellcheck source=deploy/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL_TARGETS=(novelty controller evaluator-cpu trainer-cpu generator-cpu
  evaluator-gpu trainer-gpu generator-gpu evaluator-pod-cpu evaluator-pod-gpu)
platform=${PLATFORM:-}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --platform)
      [[ $# -ge 2 && -n $2 ]] || die "--platform needs a value such as linux/amd64 or linux/arm64"
      platform=$2
      shift 2
      ;;
    --platform=*)
      platform=${1#--platform=}
      shift
      ;;
    -*) die "unknown option $1 (build.sh [--platform OS/ARCH] [TARGET...])" ;;
    *) break ;;
  esac
done
[[ -z $platform || $platform =~ ^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$ ]] ||
  die "--platform $platform: expected OS/ARCH[/VARIANT], e.g. linux/arm64"
root=$(repo_root)
tool=$(container_tool)
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || die "unknown target $t (known: ${ALL_TARGETS[*]})"
done

pip_setting() { # the value of a pip configuration key (e.g. cert), empty when unset
  python3 -m pip config list 2>/dev/null | sed -n "s/^[a-z:.]*\.$1='\(.*\)'$/\1/p" | tail -n1
}
ca=${PIP_CA-$(pip_setting cert)}
wheels=${WHEELS-$(pip_setting find-links)}

args=(-f "$root/deploy/images/Dockerfile")
[[ -n $platform ]] && args+=(--platform "$platform")
[[ -n ${BASE:-} ]] && args+=(--build-arg "BASE=$BASE")
[[ -n $ca ]] && args+=(--secret "id=ca,src=$ca")
# This machine's local wheels are built for its own platform, not for another.
native=linux/$(uname -m | sed 's/^x86_64$/amd64/; s/^aarch64$/arm64/')
if [[ -n $wheels && -d $wheels && (-z $platform || $platform == "$native"*) ]]; then
  [[ $tool == docker ]] && die "WHEELS needs podman or buildah (docker build cannot mount a folder)"
  args+=(-v "$wheels:$wheels:ro" --build-arg "PIP_FIND_LINKS=$wheels" --build-arg TORCH_CPU_INDEX=)
fi
case "$tool" in
  buildah) build=(buildah bud --layers --isolation chroot
    --ulimit nofile=1024:1024 --ulimit nproc=4096:4096) ;;
  podman) build=(podman build --layers) ;;
  docker) build=(docker build) ;;
esac

for t in "${targets[@]}"; do
  ref=$(image_ref "$t")
  echo "== $ref (target $t, $tool${platform:+, $platform})"
  nice -n 10 "${build[@]}" "${args[@]}" --target "$t" -t "$ref" "$root"
done
