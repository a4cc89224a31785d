"""``python -m services.controller [--config FILE] [--port N]``: run the controller service."""

import sys

from services.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", "controller", *sys.argv[1:]]))
