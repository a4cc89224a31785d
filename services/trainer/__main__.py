"""``python -m services.trainer [--config FILE] [--port N]``: run the trainer service."""

import sys

from services.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", "trainer", *sys.argv[1:]]))
