#!/usr/bin/env bash
# Build the CPU images with buildah and start each service inside its own image; pass when
# every one answers gRPC health (SERVING) and reflection (its nasloop.v1 service is listed)
# from outside the container. Needs no Docker engine and no registry (DESIGN.md, "Images").
# An evaluator target brings its evaluation pod's image (evaluator-pod-cpu or -gpu, the Jobs'
# image): deploy/images/pod_view_check.py inside it (only what the local strict sandbox shows a
# candidate: no scikit-learn, no digits data file, no service clients), then the pod's entry
# point (python -m services.evaluator.pod) as cluster mode runs it, through tests/image_pod.py:
# the evaluator's own Kubernetes executor against moto's S3 server on loopback and a fake
# Kubernetes API whose "kubelet" runs each Job's container with buildah run (the manifest's uid,
# env, read-only root); a good network must be trained and scored, a raising one must get its
# own failure status, one that imports scikit-learn to rebuild the digits labels must fail to.
# Usage: smoke.sh [TARGET...]   default: novelty controller evaluator-cpu trainer-cpu
# generator-cpu. The GPU images (evaluator-gpu trainer-gpu generator-gpu) run only when named:
# they need no GPU here (checked on the CPU: pip-install.sh check-torch inside the image, then
# the service; the generator with its transformers backend, as vLLM's GPU build cannot start
# without one, and Triton compiling and loading its C stub with the image's compiler,
# deploy/images/triton_check.py) but download several GB of CUDA wheels, are 6-10 GB each and
# need 20-30 GB of free disk to build (docs/images.md).
# Environment: BASE (default: a Debian image built here by debian-base.sh), SKIP_BUILD=1 (use
# the images as they are), SMOKE_TIMEOUT_S (per service, default 180), and build.sh's.
set -euo pipefail
# shellcheck source=deploy/images/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=$(repo_root)
here="$root/deploy/images"
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(novelty controller evaluator-cpu trainer-cpu generator-cpu)
need buildah "apt-get install buildah (the smoke test runs images with buildah run)"
grpcurl=${GRPCURL:-$root/.venv/bin/grpcurl}
[[ -x $grpcurl ]] || grpcurl=$(command -v grpcurl) ||
  die "grpcurl is required: make setup installs it into .venv"
python=${PYTHON:-$root/.venv/bin/python}
[[ -x $python ]] || die "$python missing: run make setup first"
timeout_s=${SMOKE_TIMEOUT_S:-180}

if [[ -z ${BASE:-} ]]; then
  export BASE=localhost/nasloop-base:bookworm
  "$here/debian-base.sh" "$BASE"
fi
# Each evaluator image is checked with the evaluation pod's image of its variant.
builds=()
for t in "${targets[@]}"; do
  builds+=("$t")
  [[ $t == evaluator-cpu || $t == evaluator-gpu ]] && builds+=("evaluator-pod-${t##*-}")
done
if [[ -z ${SKIP_BUILD:-} ]]; then
  BUILDER=buildah "$here/build.sh" "${builds[@]}"
fi

work=$(mktemp -d)
ctr=""
pgid=""
cleanup() {
  if [[ -n $pgid ]]; then kill -TERM -- "-$pgid" 2>/dev/null || true; fi
  if [[ -n $ctr ]]; then buildah rm "$ctr" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# What every final image must be: its fixed non-root uid, code it cannot change, no compiler
# (argument "compiler": gcc present, for Triton; generator-gpu), no package cache, its code
# imports (argument 3: the module) (run inside the image, as its USER).
IMAGE_CHECK='
import importlib, os, shutil, sys
problems = []
if os.getuid() != 10001 or os.getgid() != 10001:
    problems.append(f"runs as {os.getuid()}:{os.getgid()}, not 10001:10001")
if os.access("/opt/nasloop", os.W_OK) or os.access(sys.executable, os.W_OK):
    problems.append("the virtual environment is writable by the service user")
compilers = [c for c in ("gcc", "cc", "g++", "c++", "clang") if shutil.which(c)]
if sys.argv[1] == "compiler":
    problems += [] if shutil.which("gcc") else ["no gcc (Triton compiles its C stubs with it)"]
else:
    problems += [f"compiler present: {c}" for c in compilers]
caches = ["/root/.cache/pip", os.path.expanduser("~/.cache/pip"), "/var/lib/apt/lists/partial"]
problems += [f"cache left: {d}" for d in caches if os.path.isdir(d) and os.listdir(d)]
importlib.import_module(sys.argv[2])  # the package and its dependencies import
sys.exit("; ".join(problems) or None)
'

# image_check TARGET [compiler] [MODULE]: IMAGE_CHECK inside the image; ctr is left set.
image_check() {
  ctr=$(buildah from --quiet "$(image_ref "$1")")
  buildah run --isolation chroot "$ctr" -- python3 -c "$IMAGE_CHECK" "${2:-no-compiler}" \
    "${3:-services.cli}" || die "$(image_ref "$1") is not a proper final image (above)"
}

# smoke TARGET SERVICE GRPC_SERVICE [buildah-run options...]: check the image, start the
# service, probe it from outside, stop it.
smoke() {
  local target=$1 service=$2 grpc_name=$3 port start status
  shift 3
  port=$(free_port)
  image_check "$target" "${COMPILER:-}"
  start=$SECONDS
  setsid buildah run --isolation chroot \
    --env NASLOOP_STORE__URL=file:///tmp/store --env NASLOOP_SERVER__METRICS_PORT= \
    --env NASLOOP_SERVER__LOG_FORMAT=text "$@" \
    "$ctr" -- nasloop serve "$service" --port "$port" >"$work/$service.log" 2>&1 &
  pgid=$!
  status=""
  until [[ $status == SERVING ]]; do
    if ! kill -0 "$pgid" 2>/dev/null; then
      tail -n 30 "$work/$service.log" >&2
      die "$service exited inside $(image_ref "$target") before it was serving"
    fi
    if ((SECONDS - start > timeout_s)); then
      tail -n 30 "$work/$service.log" >&2
      die "$service in $(image_ref "$target"): not SERVING after ${timeout_s}s"
    fi
    sleep 1
    status=$("$grpcurl" -plaintext -max-time 3 "127.0.0.1:$port" grpc.health.v1.Health/Check \
      2>/dev/null | sed -n 's/.*"status": "\(.*\)".*/\1/p') || true
  done
  "$grpcurl" -plaintext "127.0.0.1:$port" list | grep -qx "nasloop.v1.$grpc_name" ||
    die "$service: reflection does not list nasloop.v1.$grpc_name"
  echo "ok: $service answers health (SERVING) and reflection from $(image_ref "$target")" \
    "in $((SECONDS - start))s"
  kill -TERM -- "-$pgid" 2>/dev/null || true
  wait "$pgid" 2>/dev/null || true
  pgid=""
  buildah rm "$ctr" >/dev/null
  ctr=""
}

# gpu_check TARGET [PYTHON]: a CUDA torch and torchvision's operators in the image (on the CPU),
# then PYTHON (e.g. an import) if given.
gpu_check() {
  ctr=$(buildah from --quiet "$(image_ref "$1")")
  buildah run --isolation chroot "$ctr" -- sh -c "$(cat "$here/pip-install.sh")" - check-torch ||
    die "$(image_ref "$1"): no CUDA torch with a working torchvision (above)"
  if [[ -n ${2:-} ]]; then
    buildah run --isolation chroot "$ctr" -- python3 -c "$2" || die "$(image_ref "$1"): $2 failed"
  fi
  buildah rm "$ctr" >/dev/null
  ctr=""
}

# triton_check TARGET: Triton compiles and loads its C stub in the image, on the CPU
# (deploy/images/triton_check.py, as the image's USER, with its HOME as Triton's cache).
triton_check() {
  ctr=$(buildah from --quiet "$(image_ref "$1")")
  buildah run --isolation chroot "$ctr" -- python3 -c "$(cat "$here/triton_check.py")" ||
    die "$(image_ref "$1"): Triton cannot build its C stub (above)"
  buildah rm "$ctr" >/dev/null
  ctr=""
}

# pod_check VARIANT: the evaluation pod's image (evaluator-pod-VARIANT): the image's own checks,
# what a candidate can reach in it (deploy/images/pod_view_check.py), then the pod's entry point
# as cluster mode runs it (tests/image_pod.py).
pod_check() {
  local target=evaluator-pod-$1
  image_check "$target" no-compiler services.evaluator.pod
  buildah run --isolation chroot "$ctr" -- python3 -c "$(cat "$here/pod_view_check.py")" ||
    die "$(image_ref "$target") holds more than the strict sandbox shows a candidate (above)"
  buildah rm "$ctr" >/dev/null
  ctr=""
  "$python" "$root/tests/image_pod.py" "$(image_ref "$target")" ||
    die "the evaluation pod does not work in $(image_ref "$target") (its log above)"
}

# The tiny test model, laid into a Hugging Face cache under $work/hf as smoke/tiny-lm.
tiny_lm() {
  [[ -d $work/hf ]] || "$python" "$root/tests/tiny_lm.py" "$work/hf" smoke/tiny-lm
  chmod -R a+rX "$work"
}
tiny_lm_options=(--volume "$work/hf:/var/lib/nasloop/hf:ro" --env HF_HUB_OFFLINE=1
  --env NASLOOP_GENERATOR__MODEL=smoke/tiny-lm --env NASLOOP_GENERATOR__KV_CACHE_GIB=1)

for t in "${targets[@]}"; do
  case "$t" in
    novelty) smoke novelty novelty Novelty ;;
    # No bubblewrap inside an unprivileged container: the weak sandbox here; in a cluster the
    # evaluator runs candidates as hardened Jobs (executor kubernetes) instead.
    evaluator-cpu)
      smoke evaluator-cpu evaluator Evaluator --env NASLOOP_EVALUATOR__SANDBOX=weak
      pod_check cpu
      ;;
    evaluator-pod-cpu | evaluator-pod-gpu) pod_check "${t##*-}" ;;
    trainer-cpu) smoke trainer-cpu trainer Trainer ;;
    generator-cpu)
      # The tiny test model, served by its id.
      tiny_lm
      smoke generator-cpu generator Generator "${tiny_lm_options[@]}"
      ;;
    controller) smoke controller controller Controller ;;
    evaluator-gpu)
      gpu_check evaluator-gpu
      smoke evaluator-gpu evaluator Evaluator --env NASLOOP_EVALUATOR__SANDBOX=weak
      gpu_check evaluator-pod-gpu
      pod_check gpu
      ;;
    trainer-gpu)
      gpu_check trainer-gpu "import peft, transformers"
      smoke trainer-gpu trainer Trainer
      ;;
    generator-gpu)
      gpu_check generator-gpu "import vllm; print('vllm', vllm.__version__)"
      triton_check generator-gpu
      tiny_lm
      COMPILER=compiler smoke generator-gpu generator Generator "${tiny_lm_options[@]}" \
        --env NASLOOP_GENERATOR__BACKEND=transformers
      ;;
    *) die "no smoke test for $t (have: novelty controller evaluator-cpu trainer-cpu" \
      "generator-cpu evaluator-gpu trainer-gpu generator-gpu evaluator-pod-cpu" \
      "evaluator-pod-gpu)" ;;
  esac
done
