"""The run commands of the CLI: ``nasloop run | runs | status | report | cycle``.

Each works on the store directly (local mode) or, with ``--controller HOST:PORT``, through a
running controller over gRPC.
"""

from __future__ import annotations

import argparse
import sys
import threading

from nasloop import layout
from nasloop.config import Config, StoreConfig, load_config
from nasloop.store import ObjectStore, StoreError, open_store
from services.controller.loop import state as st
from services.controller.report import build as report
from services.controller.runspec import RunSpec, dump_spec, load_spec


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.resume and (args.spec or args.sets or args.preset or args.name):
        print("nasloop: --resume takes no spec, preset, --set or --name", file=sys.stderr)
        return 2
    spec = None
    if not args.resume:
        spec = load_spec(args.preset, args.spec, overrides=args.sets)
        if args.name:
            spec = spec.model_copy(update={"name": layout.check_run_name(args.name)})
    if args.controller:
        return _run_remote(args.controller, spec, args.resume, cfg)
    from services.controller.cli.local_run import run_local

    return run_local(cfg, spec, args.resume)


def _run_remote(address: str, spec: RunSpec | None, resume: str | None, cfg: Config) -> int:
    from nasloop.rpc import connect
    from nasloop.v1 import controller_pb2 as pb
    from nasloop.v1 import controller_pb2_grpc as pb_grpc
    from services.controller.cli.progress import Progress

    with connect(address, tls=cfg.tls) as channel:
        stub = pb_grpc.ControllerStub(channel)
        if spec is None:  # --resume
            run = stub.ResumeRun(pb.ResumeRunRequest(name=resume))
        else:
            run = stub.StartRun(pb.StartRunRequest(spec_yaml=dump_spec(spec)))
        print(f"run {run.name} started on {address}", file=sys.stderr)
        progress = Progress()
        watch = stub.WatchRun(pb.WatchRunRequest(name=run.name, from_cycle=run.current_cycle))
        stopping = threading.Event()
        try:
            for event in watch:
                progress(event)
        except KeyboardInterrupt:
            stopping.set()
            stub.StopRun(pb.StopRunRequest(name=run.name))
            print(f"\nstopping {run.name} after the current step", file=sys.stderr)
        progress.close()
        run = stub.GetRun(pb.GetRunRequest(name=run.name))
    print(pb.RunState.Name(run.state).removeprefix("RUN_STATE_").lower(), run.error)
    if run.state != pb.RUN_STATE_SUCCEEDED:
        return 1
    _report_if_visible(cfg.store, run.name)
    return 0


def _report_if_visible(store_cfg: StoreConfig, run: str) -> None:
    """After a run on a controller: its report, if this CLI's store holds the run."""
    try:
        store = open_store(store_cfg)
        held = st.load_run_state(store, run) is not None
    except StoreError as e:
        print(f"no report: cannot read this CLI's store ({e})", file=sys.stderr)
        return
    if not held:
        print(f"no report: this CLI's store ({store.url}) does not hold run {run}", file=sys.stderr)
        return
    report.announce(store, run)


def runs(args: argparse.Namespace) -> int:
    store = open_store(load_config(args.config).store)
    names = st.list_runs(store)
    if not names:
        print("no runs")
    for name in names:
        s = st.load_run_state(store, name)
        if s is not None:
            print(f"{name}\t{s.state}\tcycle {s.cycle} ({s.cycles_done} done)\t{s.updated}")
    return 0


def status(args: argparse.Namespace) -> int:
    store = open_store(load_config(args.config).store)
    s = st.load_run_state(store, layout.check_run_name(args.run))
    if s is None:
        print(f"nasloop: no run named {args.run!r}", file=sys.stderr)
        return 2
    baseline = ", baseline done" if s.baseline_done else ""
    print(
        f"run {s.name}: {s.state}, cycle {s.cycle} step {s.phase or '-'}, "
        f"{s.cycles_done} done{baseline}"
    )
    if s.adapter:
        print(f"adapter: {s.adapter.name} ({s.adapter.prefix}, {s.adapter.sha256[:12]})")
    if s.error:
        print(f"error: {s.error}")
    return 0


def report_run(args: argparse.Namespace) -> int:
    """The per-cycle table on stdout; the full report (Markdown, HTML, plots) in a folder."""
    from pathlib import Path

    store = open_store(load_config(args.config).store)
    names = [layout.check_run_name(n) for n in (args.run, args.against) if n]
    for name in names:
        if st.load_run_state(store, name) is None:
            print(f"nasloop: no run named {name!r}", file=sys.stderr)
            return 2
    if args.against:
        return _report_against(store, names[0], names[1], args.out)
    run = names[0]
    r = report.load_report(store, run)
    html = report.write_report(r, Path(args.out) if args.out else report.default_folder(store, run))
    print(report.table(r.cycles) if r.cycles else f"run {run} has no completed cycle yet")
    print(f"report: {html} (report.md and the plots beside it)")
    return 0


def _report_against(store: ObjectStore, a: str, b: str, out: str | None) -> int:
    """``nasloop report A --against B``: the run-level table on stdout, the comparison in a
    folder (default: reports/<A>-vs-<B>/ beside the store)."""
    from pathlib import Path

    from services.controller.report import against
    from services.controller.report.document import block_markdown

    c = against.load_against(report.load_report(store, a), report.load_report(store, b))
    folder = Path(out) if out else report.default_folder(store, against.folder_name(a, b))
    html = against.write_against(c, folder)
    table = against.run_table(c)
    print(block_markdown(table) if table else f"runs {a} and {b} have no finished cycle in common")
    print(f"report: {html} (report.md and the plots beside it)")
    return 0


def cycle(args: argparse.Namespace) -> int:
    """One cycle of a run, or its baseline (``--baseline``), as a Kubernetes Job runs it (also
    usable by hand)."""
    from nasloop.rpc.tls import enrol
    from nasloop.store.remote import RemoteStore
    from services.controller.clients import Services
    from services.controller.loop.cycle import run_cycle
    from services.controller.loop.runner import Stopped, StopSignal
    from services.controller.runs import load_run_spec, poll_stop

    cfg = load_config(args.config)
    store = open_store(cfg.store, cfg.tls)
    if cfg.tls.enabled and isinstance(store, RemoteStore):
        # A cycle Job holds no Secret: its identity for the services is a key made here,
        # signed by the controller, which knows this pod by its address and owning Job.
        enrol(cfg.tls, store.sign_cycle_certificate)
    run = layout.check_run_name(args.run)
    spec = load_run_spec(store, run)
    state = st.load_run_state(store, run)
    if state is None:
        print(f"nasloop: no run named {run!r}", file=sys.stderr)
        return 2
    stop = StopSignal()
    threading.Thread(target=poll_stop, args=(store, run, stop), daemon=True).start()
    services = Services(cfg.controller, cfg.tls)
    n = layout.BASELINE if args.baseline else args.cycle
    try:
        summary = run_cycle(run, n, spec, store, services, state.adapter, stop=stop)
    except Stopped as e:
        print(f"{'the baseline' if args.baseline else f'cycle {n}'} of {run}: {e}", file=sys.stderr)
        return 0  # the controller sees no summary and the stop request
    finally:
        services.close()
    print(report.table([summary]))
    return 0
