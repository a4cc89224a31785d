"""``python -m services.novelty [--config FILE] [--port N]``: run the novelty service."""

import sys

from nasloop.cli import main

sys.exit(main(["serve", "novelty", *sys.argv[1:]]))
