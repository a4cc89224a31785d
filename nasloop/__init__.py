"""nasloop: LLM-driven neural architecture design in a closed loop."""

import os

# Every nasloop process that uses gRPC also starts subprocesses (sandboxes, services, the vLLM
# engine), always fork + exec. gRPC's fork handlers are on by default and can hang a fork for
# good while other threads are inside gRPC (grpc/grpc#37259); they are only needed by a child
# that keeps using gRPC without exec, which no nasloop process does. Read when gRPC starts its
# core (the first channel or server), so this must run before either exists.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
