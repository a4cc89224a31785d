"""A candidate process's fresh /tmp (services/evaluator/confine.py: private_mounts) keeps the
code it runs from when that lies under /tmp (a checkout or venv there, as a CI clone may be):
modules imported later still load, nothing else of the old /tmp shows, the kept code is
read-only. Without the keep, the lazily imported module is gone (what failed 13 adversarial
cases from a clone under /tmp)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from services.evaluator.confine import code_under_tmp

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import json, os, sys
    from services.evaluator import confine
    site, keep = sys.argv[1], json.loads(sys.argv[2])
    sys.path.insert(0, site)
    confine._libc_call("unshare", confine.CLONE_NEWNS)
    confine.private_mounts(1 << 20, keep=tuple(keep))
    open("/tmp/scratch", "w").close()  # the fresh /tmp itself is writable
    out = {"tmp": sorted(os.listdir("/tmp"))}
    try:
        import lazy_module
        out["lazy"] = lazy_module.VALUE
    except ImportError as e:
        out["lazy"] = f"missing: {e}"
    try:
        open(os.path.join(site, "written"), "w").close()
        out["kept_writable"] = True
    except OSError:
        out["kept_writable"] = False
    print(json.dumps(out))
    """
)


def run_child(site: Path, keep: list[str]) -> dict:  # type: ignore[type-arg]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(site), json.dumps(keep)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture
def site_under_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = Path(tmp_path_factory.mktemp("site", numbered=True))
    if not base.is_relative_to("/tmp"):
        base = Path(os.path.realpath("/tmp")) / f"nasloop-site-{os.getpid()}"
        base.mkdir(exist_ok=True)
    (base / "lazy_module.py").write_text("VALUE = 42\n")
    (base / "other").mkdir(exist_ok=True)
    return base


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts in a new mount namespace need root")
def test_code_under_tmp_stays_visible_and_read_only_in_the_fresh_tmp(site_under_tmp: Path) -> None:
    got = run_child(site_under_tmp, [str(site_under_tmp)])
    assert got["lazy"] == 42
    assert got["kept_writable"] is False
    # only the kept path's first component and what the child wrote: nothing else of /tmp
    first = site_under_tmp.relative_to("/tmp").parts[0]
    assert got["tmp"] == sorted([first, "scratch"])


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts in a new mount namespace need root")
def test_without_the_keep_the_lazily_imported_module_is_gone(site_under_tmp: Path) -> None:
    got = run_child(site_under_tmp, [])
    assert str(got["lazy"]).startswith("missing")
    assert got["tmp"] == ["scratch"]


def test_code_under_tmp_names_the_outermost_paths_on_sys_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "path", ["/tmp/c/.venv/lib/site", "/tmp/c/.venv", "/usr/lib", "/tmp"])
    monkeypatch.setattr(sys, "prefix", "/tmp/c/.venv")
    found = code_under_tmp()
    assert "/tmp/c/.venv" in found and "/tmp/c/.venv/lib/site" not in found
    assert "/usr/lib" not in found and "/tmp" not in found
