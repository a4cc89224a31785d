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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nasloop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one service until SIGTERM")
    serve.add_argument("service", choices=SERVICES)
    serve.add_argument("--config", help="YAML configuration file (default: $NASLOOP_CONFIG)")
    serve.add_argument("--port", type=int, help="override the service's port")
    serve.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
