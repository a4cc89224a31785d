"""Regenerate nasloop/torch_names.txt: the torch vocabulary kept verbatim by the
canonical novelty fingerprint.

Needs torch (not a runtime dependency of the novelty service):
    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.13.0
    /tmp/tv/bin/python scripts/gen_torch_names.py
"""

from __future__ import annotations

import importlib
from pathlib import Path

MODULES = (
    "torch",
    "torch.nn",
    "torch.nn.functional",
    "torch.optim",
    "torch.optim.lr_scheduler",
    "torch.nn.init",
)
OUT = Path(__file__).resolve().parent.parent / "nasloop" / "torch_names.txt"


def main() -> None:
    names: set[str] = set()
    for module in MODULES:
        # Public names only; single letters (torch.e) would catch ordinary variable names.
        names.update(n for n in dir(importlib.import_module(module)) if not n.startswith("_"))
    names = {n for n in names if len(n) > 1 and n.isidentifier()}
    OUT.write_text("".join(f"{n}\n" for n in sorted(names)))
    print(f"wrote {len(names)} names to {OUT}")


if __name__ == "__main__":
    main()
