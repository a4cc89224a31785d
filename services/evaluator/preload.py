"""What a candidate's process imports, imported by its trusted parent before it forks.

A confined child may not be able to read the interpreter's files (under another uid, a Python
installed in a home directory it cannot enter; in a view without them), so what torch and the
harness import lazily must already be in ``sys.modules`` when the child is forked: it inherits
them and reads no file to import them. Importing them once here also spares each child their
cost (``torch._dynamo``, which the optimizers import on first use, takes about 2 s).
"""

from __future__ import annotations

import importlib

MODULES = (
    "collections",
    "copy",
    "cProfile",  # torch._dynamo imports it lazily
    "functools",
    "itertools",
    "math",
    "random",
    "typing",
    "numpy",
    "torch",
    "torch._dynamo",
    "torch.nn.functional",
    "torch.optim",
    "torch.optim.lr_scheduler",
    "torch.utils.data",
    "torch.utils.flop_counter",
    "services.evaluator.harness",
)


def preload() -> None:
    """Import :data:`MODULES` in this process (a no-op once they are imported)."""
    for name in MODULES:
        importlib.import_module(name)
