"""``python -m services.evaluator [--config FILE] [--port N]``: run the evaluator service."""

import sys

from services.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", "evaluator", *sys.argv[1:]]))
