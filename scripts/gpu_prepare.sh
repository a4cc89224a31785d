#!/usr/bin/env bash
# Prepares what scripts/gpu_check.sh carries to a lent GPU machine (no network there), in the
# checkout this runs from: .whl/ (cp312 x86-64 wheels of what nasloop's evaluator imports and
# the GPU image lacks) and .gpu/ (Debian's bubblewrap, the libraries it links, libseccomp). Both folders
# are ignored through .git/info/exclude. Run once here (needs the package index and apt).
#
# Usage: scripts/gpu_prepare.sh          then carry [".whl", ".gpu"] in the device run
#        LOOP=1 scripts/gpu_prepare.sh   also what scripts/gpu_loop.sh needs beyond the
#                                        evaluator (the S3 client, MinHash, progress bars), for an
#                                        environment with CUDA torch, transformers and peft
set -euo pipefail
cd "$(dirname "$0")/.."

exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
for p in /.whl/ /.gpu/; do
  grep -qxF "$p" "$exclude" 2>/dev/null || echo "$p" >>"$exclude"
done

# Versions as in this project's .venv (pyproject pins); the GPU image (Python 3.12.3) has numpy,
# pyyaml, packaging, prometheus-client, scikit-learn, torch and torchvision of its own. grpcio
# and protobuf are carried because the generated stubs check their versions at import.
WHEELS=(
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing_extensions==4.16.0
  protobuf==7.36.2 grpcio==1.85.1 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1
  pyseccomp==0.1.2
)
if [ -n "${LOOP:-}" ]; then
  WHEELS+=(
    datasketch==2.0.0 minio==7.2.20 argon2-cffi==25.1.0 argon2-cffi-bindings==26.2.0
    cffi==2.1.1 pycparser==3.12 pycryptodome==4.5.0 certifi==2026.10.19.post1 urllib3==2.8.0
    tqdm==4.70.1 prometheus-client==0.26.0
  )
fi
rm -rf .whl
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"

# bubblewrap: the binary and the shared libraries it links that are not glibc's own.
bwrap="$(command -v bwrap || true)"
if [ -z "$bwrap" ] && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q bubblewrap >/dev/null
  bwrap="$(command -v bwrap)"
fi
rm -rf .gpu
mkdir -p .gpu/lib
if [ -n "$bwrap" ]; then
  cp "$bwrap" .gpu/bwrap
  ldd "$bwrap" | awk '$3 ~ /^\// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|ld-linux*) ;;  # the machine's own glibc
      *) cp -L "$lib" .gpu/lib/ ;;
    esac
  done
  # pyseccomp loads libseccomp with ctypes (and raises when it is missing)
  seccomp_lib="$(ldconfig -p | awk '/libseccomp\.so\.2 .*x86-64/ {print $NF; exit}')"
  if [ -n "$seccomp_lib" ]; then cp -L "$seccomp_lib" .gpu/lib/libseccomp.so.2; fi
else
  echo "no bubblewrap here (apt-get install bubblewrap): the check will use sandbox=weak" >&2
fi

echo "wheels:"
ls -1 .whl
echo "carried beside the wheels:"
find .gpu -type f | sort
du -sh .whl .gpu
