"""The ``nasloop`` command line."""

from __future__ import annotations

import argparse
import importlib
import sys

from pydantic import ValidationError

from nasloop.config import ConfigError, load_config
from nasloop.logs import setup_logging

SERVICES = ("novelty", "evaluator", "trainer")


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


def _bootstrap_model(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"nasloop: {e}", file=sys.stderr)
        return 2
    from nasloop.bootstrap import RunMismatch, bootstrap_model
    from nasloop.store import open_store

    name = args.name or f"bootstrap-{args.size}"
    store = open_store(cfg.store)
    try:
        result, manifest = bootstrap_model(
            store,
            name,
            args.size,
            networks=args.networks,
            steps=args.steps,
            seed=args.seed,
            work_dir=args.work_dir,
        )
    except RunMismatch as e:
        print(f"nasloop: {e}", file=sys.stderr)
        return 2
    print(
        f"model {name}: {result.parameters:,} parameters, {result.steps} steps, "
        f"final loss {manifest['meta']['final_loss']}"
    )
    print(f"saved to {store.url.rstrip('/')}/models/{name}/ (local copy: {result.model_dir})")
    return 0


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
    boot.add_argument("--size", choices=("tiny", "default"), default="default")
    boot.add_argument("--name", help="model name in the store (default: bootstrap-SIZE)")
    boot.add_argument("--networks", type=int, help="corpus size (default: the size's)")
    boot.add_argument("--steps", type=int, help="optimizer steps (default: the size's)")
    boot.add_argument("--seed", type=int, default=0)
    boot.add_argument(
        "--work-dir", help="checkpoints; rerun to resume (default: .nasloop/bootstrap/NAME)"
    )
    boot.add_argument("--config", help="YAML configuration file (default: $NASLOOP_CONFIG)")
    boot.set_defaults(func=_bootstrap_model)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
