"""``nasloop run`` without a cluster: the four services on loopback, the run driven in-process.

The services are started as child processes bound to this one (they die with it, even on
SIGKILL), their logs under ``.nasloop/runs/<run>/logs/``; the run itself is the controller's
own run manager, so a run started here can be resumed here (``--resume``) or by a controller.
Ctrl-C stops after the current step (a second Ctrl-C at once) and says how to resume.
"""

from __future__ import annotations

import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from nasloop import layout
from nasloop.config import Config
from nasloop.store import ObjectStore, open_store
from services.controller.cli.progress import Progress
from services.controller.loop import state as st
from services.controller.report import build as report
from services.controller.runs import RunManager, load_run_spec
from services.controller.runspec import RunSpec
from services.controller.server import event_to_pb
from services.local import local_services

BOOTSTRAP_MODELS = {layout.bootstrap_model(size): size for size in ("default", "tiny")}
SEED_CORPUS_SIZE = 1000
LOG_ROOT = Path(".nasloop/runs")


def default_name(spec: RunSpec) -> str:
    return f"{spec.preset}-{datetime.now():%Y%m%d-%H%M%S}"


def ensure_inputs(store: ObjectStore, spec: RunSpec, out: TextIO) -> None:
    """The base model and the seed corpus, built when the store has none and the project can
    make them (the bootstrap model and the grammar's corpus)."""
    model = spec.base_model.strip("/")
    if layout.is_store_model(model) and store.manifest_sha256(model) is None:
        size = BOOTSTRAP_MODELS.get(model)
        if size is None:
            raise SystemExit(f"nasloop: no model at {model}/ in the store ({store.url})")
        from nasloop.bootstrap import bootstrap_model

        print(f"bootstrapping {model} (once; about 15 min on 2 cores) ...", file=out)
        bootstrap_model(store, model.split("/", 1)[1], size)
    if spec.corpus and store.manifest_sha256(layout.corpus_prefix(spec.corpus)) is None:
        if spec.corpus != "seed":
            raise SystemExit(f"nasloop: no corpus {spec.corpus!r} in the store ({store.url})")
        from nasloop.corpus.build import seed_corpus
        from nasloop.corpus.records import save_corpus

        print(f"writing the seed corpus ({SEED_CORPUS_SIZE} grammar networks) ...", file=out)
        save_corpus(store, "seed", seed_corpus(SEED_CORPUS_SIZE))


def service_env(cfg: Config, spec: RunSpec) -> dict[str, dict[str, str]]:
    """Per-service settings the run implies (the rest comes from the caller's configuration)."""
    store_url = cfg.store.url
    if store_url.startswith("file://"):  # the services may run elsewhere: an absolute path
        store_url = "file://" + str(Path(store_url[len("file://") :]).expanduser().absolute())
    common = {"NASLOOP_STORE__URL": store_url}
    # The generator's backend stays the configured one ("auto": vLLM where it is installed).
    # Measured inside the loop on 2 CPU cores, vLLM's CPU build generated 2-3x the tokens/s of
    # transformers + peft, with and without an adapter (docs/benchmarks.md, issue 10).
    generator = {"NASLOOP_GENERATOR__MODEL": spec.base_model}
    rank = spec.training.lora.r
    if rank > cfg.generator.max_lora_rank:
        generator["NASLOOP_GENERATOR__MAX_LORA_RANK"] = str(rank)
    return {
        "common": common,
        "generator": generator,
    }


def run_local(
    cfg: Config,
    spec: RunSpec | None,
    resume: str | None = None,
    out: TextIO = sys.stderr,
) -> int:
    store = open_store(cfg.store)
    if resume:
        name = layout.check_run_name(resume)
        spec = load_run_spec(store, name)
    else:
        assert spec is not None
        name = spec.name or default_name(spec)
        spec = spec.model_copy(update={"name": name})
    ensure_inputs(store, spec, out)
    envs = service_env(cfg, spec)
    logs = LOG_ROOT / name / "logs"
    print(f"run {name}: starting the services (logs in {logs}/) ...", file=out)
    with local_services(
        envs["common"], logs, per_service_env={"generator": envs["generator"]}
    ) as services:
        controller = cfg.controller.model_copy(update={n: s.address for n, s in services.items()})
        runs = RunManager(cfg.model_copy(update={"controller": controller}), store)
        progress = Progress(out)
        runs.observers.add(lambda e: progress(event_to_pb(e)))
        started = time.monotonic()
        state = runs.resume(name) if resume else runs.start(spec)
        _stop_on_signals(runs, name, out)
        state = runs.wait(name)
        progress.close()
    return _finish(store, runs, state, started, out)


def _stop_on_signals(runs: RunManager, name: str, out: TextIO) -> None:
    presses = {"n": 0}

    def handler(signum: int, _frame: Any) -> None:
        presses["n"] += 1
        now = presses["n"] > 1 or signum == signal.SIGTERM
        print(
            "\nstopping at once ..." if now else
            "\nstopping after the current step (Ctrl-C again to stop at once) ...",
            file=out,
        )  # fmt: skip
        runs.stop(name, now=now)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _finish(
    store: ObjectStore, runs: RunManager, state: st.RunState, started: float, out: TextIO
) -> int:
    _, _, summaries = runs.get(state.name)
    if summaries:
        print(report.table(summaries))
    took = time.monotonic() - started
    if state.state == "succeeded":
        baseline = " and its baseline" if state.baseline_done else ""
        print(
            f"run {state.name} finished {state.cycles_done} cycles{baseline} in {took:.0f} s",
            file=out,
        )
        report.announce(store, state.name, out)
        return 0
    if state.state == "stopped":
        print(
            f"run {state.name} stopped in cycle {state.cycle}; resume with: "
            f"nasloop run --resume {state.name}",
            file=out,
        )
        return 130
    print(f"run {state.name} failed in cycle {state.cycle}: {state.error}", file=out)
    print(f"resume with: nasloop run --resume {state.name}", file=out)
    return 1
