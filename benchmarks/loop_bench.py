"""The loop's own costs: time per cycle by step, overlap of generation and evaluation, the
controller's overhead, and the generator backends inside the loop (with and without adapters).

    python benchmarks/loop_bench.py [--candidates 48] [--backends transformers vllm]

Needs the bootstrap model in the store (``make run`` or ``nasloop bootstrap-model`` makes it).
For each backend, the four services are started on loopback and a run of the ``local`` preset
does two cycles: cycle 1 generates with the base model, cycle 2 with the adapter trained at the
end of cycle 1. For the first backend, cycle 1 is run a second time with the same seeds but
generation and evaluation back to back (no overlap): the overlap ratio is the overlapped
cycle's wall time over that one's. Overhead is the part of a cycle's wall time spent outside
service calls.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nasloop.config import load_config
from nasloop.store import open_store
from services.controller.cli.local_run import ensure_inputs, service_env
from services.controller.clients import Services
from services.controller.loop import state as st
from services.controller.loop.cycle import run_cycle
from services.controller.loop.summary import CycleSummary
from services.controller.runs import create_run
from services.controller.runspec import load_spec
from services.local import local_services


def tokens(store, run: str, cycle: int) -> int:  # type: ignore[no-untyped-def]
    return sum(r.completion_tokens for r in st.load_candidates(store, run, cycle))


def show(label: str, s: CycleSummary, p: st.CycleProgress, toks: int) -> None:
    steps = ", ".join(f"{k} {v:.1f}" for k, v in s.seconds.items())
    overhead = 1 - s.service_seconds / s.wall_seconds if s.wall_seconds else 0.0
    gen = p.generation_seconds
    print(
        f"{label}: wall {s.wall_seconds:.1f} s [{steps}]; generation {gen:.1f} s, "
        f"{toks} tokens, {toks / gen if gen else 0:.0f} tokens/s; evaluation busy "
        f"{p.evaluation_seconds:.1f} s; valid {s.valid}/{s.generated} "
        f"({100 * s.valid_rate:.1f} %), mean acc {s.mean_accuracy:.3f}, distinct {s.distinct}, "
        f"novel {s.novel}, selected {s.selected}; controller overhead {100 * overhead:.2f} %"
    )
    print(f"  stopped: {dict(sorted(s.stopped.items(), key=lambda kv: -kv[1]))}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--candidates", type=int, default=48)
    ap.add_argument("--backends", nargs="+", default=["transformers", "vllm"])
    ap.add_argument("--no-sequential", action="store_true", help="skip the overlap baseline")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="spec override")
    args = ap.parse_args()
    cfg = load_config()
    store = open_store(cfg.store)
    stamp = time.strftime("%H%M%S")
    print(f"machine: {platform.node()}, {platform.processor() or platform.machine()}")
    for i, backend in enumerate(args.backends):
        run = f"bench-{backend[:5]}-{stamp}"
        spec = load_spec(
            "local",
            overrides=[f"candidates_per_cycle={args.candidates}", "cycles=2", *args.sets],
        ).model_copy(update={"name": run})
        ensure_inputs(store, spec, sys.stderr)
        envs = service_env(cfg, spec)
        envs["generator"]["NASLOOP_GENERATOR__BACKEND"] = backend
        logs = Path(".nasloop/bench") / run
        t0 = time.perf_counter()
        with local_services(envs["common"], logs, per_service_env=envs) as services:
            print(f"\n== {backend}: services ready in {time.perf_counter() - t0:.1f} s")
            controller = cfg.controller.model_copy(
                update={n: s.address for n, s in services.items()}
            )
            clients = Services(controller)
            create_run(store, spec)
            previous = None
            for n in (1, 2):
                summary = run_cycle(run, n, spec, store, clients, previous)
                progress = st.load_progress(store, run, n)
                assert progress is not None
                label = f"{backend} cycle {n} ({'adapter' if previous else 'base model'})"
                show(label, summary, progress, tokens(store, run, n))
                previous = summary.adapter or previous
            if i == 0 and not args.no_sequential:
                seq = f"{run}-seq"
                seq_spec = spec.model_copy(update={"name": seq, "cycles": 1})
                create_run(store, seq_spec)
                seq_summary = run_cycle(seq, 1, seq_spec, store, clients, None, overlap=False)
                seq_progress = st.load_progress(store, seq, 1)
                assert seq_progress is not None
                show(f"{backend} cycle 1, back to back", seq_summary, seq_progress, 0)
                first = st.load_progress(store, run, 1)
                assert first is not None
                print(
                    f"overlap ratio (cycle 1 wall ÷ the same cycle back to back): "
                    f"{first.wall_seconds / seq_progress.wall_seconds:.3f}"
                )
            clients.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
