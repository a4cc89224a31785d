"""Regenerate the Python stubs in nasloop/v1/ from proto/nasloop/v1/*.proto.

Besides the messages (*_pb2.py, typed by *_pb2.pyi) and the gRPC stubs (*_pb2_grpc.py), it writes
*_pb2_grpc.pyi with mypy-protobuf's protoc-gen-mypy_grpc (the dev extra), so that the servicers and
client stubs are type-checked.

Usage: python scripts/gen_proto.py [--out DIR]   (DIR defaults to the repository root)
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"


def generate(out: Path) -> list[Path]:
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(PROTO_DIR.glob("nasloop/v1/*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    (out / "nasloop" / "v1").mkdir(parents=True, exist_ok=True)
    # The plugin sits next to the interpreter in a venv; else on PATH.
    plugin = Path(sys.executable).parent / "protoc-gen-mypy_grpc"
    if not plugin.exists():
        plugin = Path(shutil.which("protoc-gen-mypy_grpc") or "protoc-gen-mypy_grpc")
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy_grpc={plugin}",
        f"--mypy_grpc_out={out}",
        *(str(p.relative_to(PROTO_DIR)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    init = out / "nasloop" / "v1" / "__init__.py"
    init.write_text('"""Generated gRPC stubs (make proto). Do not edit."""\n')
    return sorted((out / "nasloop" / "v1").iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT)
    files = generate(parser.parse_args().out)
    print(f"generated {len(files)} files", file=sys.stderr)


if __name__ == "__main__":
    main()
