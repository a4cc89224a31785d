"""``python -m services.novelty [--config FILE] [--port N]``: run the novelty service."""

import sys

from services.cli import main

if __name__ == "__main__":  # guarded: worker processes import the main module
    sys.exit(main(["serve", "novelty", *sys.argv[1:]]))
