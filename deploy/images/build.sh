#!/usr/bin/env bash
# Build nasloop's images with docker, podman or buildah (whichever is present; BUILDER chooses).
# Usage: build.sh [TARGET...]   default: every target (deploy/images/Dockerfile lists them)
# Environment: BASE (base image; default the Dockerfile's python:3.11-slim-bookworm),
# IMAGE_PREFIX (nasloop), IMAGE_TAG (the project version), PIP_CA (a CA bundle passed as the
# build secret `ca`; default: the `cert` of this machine's pip configuration, if any),
# WHEELS (a folder of local wheels mounted into the build; default: pip's `find-links`, if any;
# with it the CPU torch wheel comes from there instead of PyTorch's index).
set -euo pipefail
# shellcheck source=deploy/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL_TARGETS=(novelty controller evaluator-cpu trainer-cpu generator-cpu
  evaluator-gpu trainer-gpu generator-gpu)
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
[[ -n ${BASE:-} ]] && args+=(--build-arg "BASE=$BASE")
[[ -n $ca ]] && args+=(--secret "id=ca,src=$ca")
if [[ -n $wheels && -d $wheels ]]; then
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
  echo "== $ref (target $t, $tool)"
  nice -n 10 "${build[@]}" "${args[@]}" --target "$t" -t "$ref" "$root"
done
