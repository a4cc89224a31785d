# shellcheck shell=bash
# What the GPU scripts (gpu_check.sh, gpu_loop.sh) share on a lent GPU machine without network:
# installing what scripts/gpu_prepare.sh carried there (.whl/ wheels, .gpu/ bubblewrap and its
# libraries) and probing bubblewrap. Sourced; needs PY (the Python to install into) and T0.

banner() { printf '\n=== %s (t=%ss)\n' "$*" "$((SECONDS - T0))"; }
loud() {
  printf '%s\n' "##############################################################################"
  printf '### %s\n' "$@"
  printf '%s\n' "##############################################################################"
}

# install_carried_wheels DIR: DIR/*.whl into PY's environment (the sandbox workers and the strict
# sandbox's view see only that environment, not a PYTHONPATH); /tmp/site on PYTHONPATH when it
# cannot be written. Nothing when DIR has no wheels.
install_carried_wheels() {
  local whl=$1 purelib
  if ! compgen -G "$whl/*.whl" >/dev/null; then
    echo "no wheels in $whl: using what the machine has"
    return 0
  fi
  ls -1 "$whl"
  purelib="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "installing into $purelib"
  if [ -w "$purelib" ] && timeout 180 "$PY" -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --disable-pip-version-check "$whl"/*.whl; then
    echo "wheels installed into the machine's environment"
  else
    loud "cannot install into $purelib: wheels go to /tmp/site (PYTHONPATH)," \
      "which the sandbox workers do not see: expect the evaluator cases to fail"
    timeout 180 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --disable-pip-version-check --target /tmp/site "$whl"/*.whl
    export PYTHONPATH=/tmp/site
  fi
}

# probe_bubblewrap: install the carried bwrap and its libraries where missing, then try its
# namespaces. Sets SANDBOX (auto when they work, else weak) and WHY (why weak).
# shellcheck disable=SC2034  # SANDBOX and WHY are the caller's
probe_bubblewrap() {
  local lib soname probe
  if ! command -v bwrap >/dev/null && [ -x .gpu/bwrap ]; then
    install -m 0755 .gpu/bwrap /usr/local/bin/bwrap && echo "installed the carried bwrap"
  fi
  for lib in .gpu/lib/*; do
    [ -e "$lib" ] || continue
    soname="$(basename "$lib")"
    if ! ldconfig -p | grep -q "^[[:space:]]*$soname "; then
      cp "$lib" /usr/local/lib/ && echo "added $soname (carried) to /usr/local/lib"
    fi
  done
  ldconfig 2>/dev/null || true
  SANDBOX=weak
  WHY="bubblewrap is not installed"
  if command -v bwrap >/dev/null; then
    echo "bwrap: $(command -v bwrap) ($(bwrap --version 2>&1))"
    ldd "$(command -v bwrap)" | grep 'not found' || true
    if probe="$(timeout 30 bwrap --unshare-net --unshare-pid --unshare-ipc --unshare-uts \
      --new-session --ro-bind / / --proc /proc --dev /dev --tmpfs /tmp true 2>&1)"; then
      echo "bwrap probe: namespaces work here"
      SANDBOX=auto
    else
      WHY="bwrap cannot make its namespaces here: ${probe:-timed out}"
    fi
  fi
}
