"""The ``nasloop`` command line."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import ValidationError

from nasloop import layout
from nasloop.config import ConfigError, load_config
from nasloop.logs import setup_logging

if TYPE_CHECKING:
    from nasloop.store import ObjectStore

SERVICES = ("novelty", "generator", "evaluator", "trainer", "controller")


def _serve(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
        if args.port is not None:
            cfg = cfg.model_copy(deep=True)
            getattr(cfg, args.service).port = args.port  # validated on assignment
    except ConfigError as e:
        print(f"nasloop: {e}", file=sys.stderr)
        return 2
    except ValidationError as e:  # --port out of range
        print(f"nasloop: invalid --port: {e.errors()[0]['msg']}", file=sys.stderr)
        return 2
    setup_logging(cfg.server.log_level, cfg.server.log_format)
    module = importlib.import_module(f"services.{args.service}.server")
    module.serve(cfg)
    return 0


def _store(args: argparse.Namespace) -> ObjectStore:
    from nasloop.store import open_store

    return open_store(load_config(args.config).store)


def _bootstrap_model(args: argparse.Namespace) -> int:
    from nasloop.bootstrap import SIZES, bootstrap_model, with_edit_shares

    name = args.name or f"bootstrap-{args.size}"
    size = SIZES[args.size]
    if args.edit_shares:
        try:
            size = with_edit_shares(size, *args.edit_shares)
        except ValueError as e:
            print(f"nasloop: {e}", file=sys.stderr)
            return 2
    store = _store(args)
    result, manifest = bootstrap_model(
        store,
        name,
        size,
        networks=args.networks,
        steps=args.steps,
        seed=args.seed,
        work_dir=args.work_dir,
    )
    print(
        f"model {name}: {result.parameters:,} parameters, {result.steps} steps, "
        f"final loss {manifest['meta']['final_loss']}"
    )
    where = f"{store.url.rstrip('/')}/{layout.model_prefix(name)}/"
    print(f"saved to {where} (local copy: {result.model_dir})")
    return 0


def _corpus_seed(args: argparse.Namespace) -> int:
    from nasloop.corpus.build import seed_corpus
    from nasloop.corpus.records import save_corpus

    store = _store(args)
    records = seed_corpus(args.count, seed=args.seed)
    digest = save_corpus(store, args.name, records)
    print(f"corpus {args.name}: {len(records)} seed networks (records sha256 {digest})")
    return 0


def _corpus_import_lemur(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nasloop.corpus.lemur import import_folder, import_sqlite
    from nasloop.corpus.records import dedupe, save_corpus

    store = _store(args)
    source = Path(args.source)
    datasets = set(args.dataset) or None
    importer = import_folder if source.is_dir() else import_sqlite
    records = importer(source, datasets=datasets)
    if args.dedupe:
        records = dedupe(records, keep="best")
    if not records:
        print(f"nasloop: no LEMUR models found in {source}", file=sys.stderr)
        return 1
    digest = save_corpus(store, args.name, records)
    print(f"corpus {args.name}: {len(records)} LEMUR records (records sha256 {digest})")
    return 0


def _corpus_seed_novelty(args: argparse.Namespace) -> int:
    from nasloop.corpus.build import seed_novelty
    from nasloop.corpus.records import load_corpus

    records = load_corpus(_store(args), args.name)
    added = seed_novelty(records, args.novelty, args.namespace)
    print(f"namespace {args.namespace}: added {added} of {len(records)} records ({args.name})")
    return 0


def _command_errors(func: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """Expected failures (bad config, missing or corrupt input, a refused RPC) print one line
    and exit non-zero instead of a traceback."""

    def run(args: argparse.Namespace) -> int:
        import grpc

        from nasloop.bootstrap import RunMismatch
        from nasloop.corpus.lemur import LemurError
        from nasloop.layout import InvalidName
        from nasloop.rpc.errors import ServiceError
        from nasloop.store import StoreError
        from services.controller.loop.runner import CycleError
        from services.controller.runspec import SpecError
        from services.local import ServiceFailed

        try:
            return func(args)
        except (ConfigError, RunMismatch, LemurError, StoreError, SpecError, InvalidName) as e:
            print(f"nasloop: {e}", file=sys.stderr)
            return 2
        except (ServiceError, CycleError, ServiceFailed) as e:
            print(f"nasloop: {e}", file=sys.stderr)
            return 1
        except grpc.RpcError as e:
            print(f"nasloop: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1

    return run


def _add_run_commands(sub: argparse._SubParsersAction) -> None:
    from services.controller.cli import commands

    run = sub.add_parser(
        "run",
        help="run the loop: the local preset on this machine by default (starts every service)",
    )
    run.add_argument("--preset", choices=("local", "paper"), help="default: local")
    run.add_argument("--spec", help="run spec YAML (a preset plus overrides)")
    run.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
        help="override one spec field, e.g. --set cycles=3 --set training.lora.r=8",
    )  # fmt: skip
    run.add_argument(
        "--no-baseline", dest="sets", action="append_const", const="baseline=false",
        help="skip the baseline after the last cycle (the same as --set baseline=false)",
    )  # fmt: skip
    run.add_argument("--name", help="run name (default: <preset>-<date>-<time>)")
    run.add_argument("--resume", metavar="RUN", help="resume a stopped or failed run")
    run.add_argument("--controller", metavar="HOST:PORT", help="drive a running controller instead")
    run.set_defaults(func=_command_errors(commands.run))
    runs = sub.add_parser("runs", help="list the runs in the store")
    runs.set_defaults(func=_command_errors(commands.runs))
    status = sub.add_parser("status", help="where a run is")
    status.add_argument("run")
    status.set_defaults(func=_command_errors(commands.status))
    report = sub.add_parser(
        "report", help="a run's report: report.md, report.html and plots (and the table)"
    )
    report.add_argument("run")
    report.add_argument(
        "--against", metavar="RUN",
        help="compare with another run of this CLI's store: valid rate, mean accuracy, novel "
        "good count and hypervolume per cycle and over the run, with 95 %% intervals on the "
        "differences, and "
        "where the specs differ (default folder: reports/<run>-vs-<RUN>/)",
    )  # fmt: skip
    report.add_argument("--out", metavar="DIR", help="default: reports/<run>/ beside the store")
    report.set_defaults(func=_command_errors(commands.report_run))
    cycle = sub.add_parser(
        "cycle", help="run (or resume) one cycle of a run, or its baseline: the cycle Job"
    )
    cycle.add_argument("--run", required=True)
    which = cycle.add_mutually_exclusive_group(required=True)
    which.add_argument("--cycle", type=int)
    which.add_argument(
        "--baseline", action="store_true",
        help="the base model on the last cycle's prompts and seeds (after the last cycle)",
    )  # fmt: skip
    cycle.set_defaults(func=_command_errors(commands.cycle))
    for p in (run, runs, status, report, cycle):
        p.add_argument("--config", help="YAML configuration file (default: $NASLOOP_CONFIG)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nasloop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one service until SIGTERM")
    serve.add_argument("service", choices=SERVICES)
    serve.add_argument("--config", help="YAML configuration file (default: $NASLOOP_CONFIG)")
    serve.add_argument("--port", type=int, help="override the service's port")
    serve.set_defaults(func=_serve)
    boot = sub.add_parser(
        "bootstrap-model",
        help="train the small bootstrap code LM on the seed grammar and publish it (models/NAME/)",
    )
    boot.add_argument("--size", choices=("tiny", "default", "edit"), default="default")
    boot.add_argument("--name", help="model name in the store (default: bootstrap-SIZE)")
    boot.add_argument("--networks", type=int, help="corpus size (default: the size's)")
    boot.add_argument("--steps", type=int, help="optimizer steps (default: the size's)")
    boot.add_argument(
        "--edit-shares",
        nargs=2,
        type=float,
        metavar=("FULL", "DIFF"),
        help="shares of the pairs that show a parent, answered whole / as a diff "
        "(default: the size's; edit: 0.15 0.15)",
    )
    boot.add_argument("--seed", type=int, default=0)
    boot.add_argument(
        "--work-dir", help="checkpoints; rerun to resume (default: .nasloop/bootstrap/NAME)"
    )
    boot.add_argument("--config", help="YAML configuration file (default: $NASLOOP_CONFIG)")
    boot.set_defaults(func=_command_errors(_bootstrap_model))

    corpus = sub.add_parser("corpus", help="build corpora in the store (corpora/NAME/)")
    csub = corpus.add_subparsers(dest="corpus_command", required=True)
    seed = csub.add_parser("seed", help="write the seed grammar's networks as a corpus")
    seed.add_argument("--name", default="seed")
    seed.add_argument("--count", type=int, default=1000)
    seed.add_argument("--seed", type=int, default=0)
    seed.set_defaults(func=_command_errors(_corpus_seed))
    lemur = csub.add_parser(
        "import-lemur", help="import LEMUR from its SQLite database (ab.nn.db) or a model folder"
    )
    lemur.add_argument("source", help="path to db/ab.nn.db or to a folder with nn/ and stat/")
    lemur.add_argument("--name", default="lemur")
    lemur.add_argument(
        "--dataset", action="append", default=[], help="keep only this dataset (repeatable)"
    )
    lemur.add_argument(
        "--dedupe", action="store_true", help="one record per code fingerprint (best accuracy)"
    )
    lemur.set_defaults(func=_command_errors(_corpus_import_lemur))
    novelty = csub.add_parser(
        "seed-novelty", help="add a stored corpus to the novelty service's corpus namespace"
    )
    novelty.add_argument("--name", default="seed", help="corpus name in the store")
    novelty.add_argument("--novelty", default="localhost:50053", help="novelty service address")
    novelty.add_argument("--namespace", default="corpus")
    novelty.set_defaults(func=_command_errors(_corpus_seed_novelty))
    for p in (seed, lemur, novelty):
        p.add_argument("--config", help="YAML configuration file (default: $NASLOOP_CONFIG)")
    _add_run_commands(sub)
    args = parser.parse_args(argv)
    started = args.command == "serve" or (args.command == "run" and not args.controller)
    if argv is None and started:  # a command, not a call from Python (tests)
        from nasloop import keeper

        keeper.start()  # before anything starts a process: see services/local.py
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
