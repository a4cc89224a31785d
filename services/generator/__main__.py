"""``python -m services.generator [--config FILE] [--port N]``: run the generator service."""

import sys

from services.cli import main

# The guard matters here: vLLM spawns its engine process, which re-imports this module.
if __name__ == "__main__":
    sys.exit(main(["serve", "generator", *sys.argv[1:]]))
