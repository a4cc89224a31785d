"""The candidate harness (in-process) and the confined child (forked, rlimits, seccomp, uid).

Real torch and real fork/seccomp; no bubblewrap here (the service tests and the adversarial
suite run the full strict sandbox).
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from candidates import GOOD_NET, protocol, replace, sandbox_data, with_prefix

from nasloop.v1 import common_pb2 as common
from services.evaluator import seccomp_filter
from services.evaluator.confine import Limits, run_confined
from services.evaluator.datasets import SandboxData
from services.evaluator.harness import Harness, batches
from services.evaluator.task import Task

PROTOCOL = protocol(dataset="tiny", batch_size=8, seed=3, time_limit_s=30, max_parameters=100_000)


@pytest.fixture(scope="module")
def data() -> SandboxData:
    return sandbox_data(64, 20, seed=0)


def task(code: str = GOOD_NET, mode: str = "evaluate", **proto: object) -> Task:
    from dataclasses import replace as dc_replace

    return Task("t", code, dc_replace(PROTOCOL, **proto), mode)  # type: ignore[arg-type]


def test_harness_runs_every_stage(data: SandboxData) -> None:
    r = Harness(task(), data).run()
    assert (r.status, r.last_stage) == (common.STATUS_OK, common.STAGE_TRAINED), r.message
    assert r.outputs is not None and r.outputs.shape == (20, 10)
    # 5,514 parameters + 98 BatchNorm buffer elements: every tensor of the tree counts.
    assert r.parameter_count == 5612 and 0 < r.loss < 10
    assert [s for s, _ in r.timings] == [
        common.STAGE_IMPORTED, common.STAGE_INSTANTIATED, common.STAGE_FORWARD_PROBE,
        common.STAGE_TRAINED,
    ]  # fmt: skip


def test_harness_is_reproducible(data: SandboxData) -> None:
    a, b = Harness(task(), data).run(), Harness(task(), data).run()
    assert a.loss == b.loss and (a.outputs == b.outputs).all()


def test_validate_mode_stops_after_the_probe(data: SandboxData) -> None:
    r = Harness(task(mode="validate"), data).run()
    assert (r.status, r.last_stage, r.outputs) == (
        common.STATUS_OK,
        common.STAGE_FORWARD_PROBE,
        None,
    )


def test_loss_is_measured_when_learn_ignores_criteria(data: SandboxData) -> None:
    code = replace(
        "loss = self.criteria[0](self(inputs), labels)",
        "loss = nn.functional.cross_entropy(self(inputs), labels)",
    )
    r = Harness(task(code), data).run()
    assert r.status == common.STATUS_OK and 0 < r.loss < 10


@pytest.mark.parametrize(
    ("code", "status", "stage"),
    [
        ("x = 1\n", common.STATUS_MISSING_ENTRY_POINT, common.STAGE_POLICY),
        ("raise RuntimeError('at import')\n", common.STATUS_IMPORT_ERROR, common.STAGE_POLICY),
        (replace("super().__init__()", "super().__init__(); {}['k']"),
         common.STATUS_INIT_EXCEPTION, common.STAGE_IMPORTED),
        (replace("nn.Linear(32, out_shape[0])", "nn.Linear(32, out_shape[0] * 1000)"),
         common.STATUS_PARAMETER_LIMIT, common.STAGE_IMPORTED),
        (replace("nn.Linear(32, out_shape[0])", "nn.Linear(32, 5)"),
         common.STATUS_WRONG_OUTPUT_SHAPE, common.STAGE_INSTANTIATED),
        (replace("self.optimizer.step()", "self.optimizer.step(); loss / 0 + 1 / 0"),
         common.STATUS_TRAIN_EXCEPTION, common.STAGE_FORWARD_PROBE),
        (replace("labels)\n", "labels) * float('inf')\n"),
         common.STATUS_NON_FINITE_LOSS, common.STAGE_FORWARD_PROBE),
        (with_prefix("x = bytearray(1 << 62)"), common.STATUS_OUT_OF_MEMORY, common.STAGE_POLICY),
    ],
)  # fmt: skip
def test_harness_failures(data: SandboxData, code: str, status: int, stage: int) -> None:
    r = Harness(task(code), data).run()
    assert (r.status, r.last_stage) == (status, stage), r.message
    assert r.message and "\n" not in r.message


def test_batches_are_seeded_and_respect_the_subset(data: SandboxData) -> None:
    t = task(train_subset=20)
    first = [y.tolist() for _, y in batches(data, t, 0)]
    assert first == [y.tolist() for _, y in batches(data, t, 0)]
    assert sum(len(y) for y in first) == 20
    assert first != [y.tolist() for _, y in batches(data, t, 1)]  # reshuffled each epoch


# --- the confined child -------------------------------------------------------------------

UID = 65534 if os.geteuid() == 0 else None


def limits(**kw: object) -> Limits:
    base = dict(
        wall_s=30.0, cpu_s=30.0, memory_bytes=1 << 30, file_bytes=1 << 20, open_files=64,
        uid=UID, gid=UID, seccomp=seccomp_filter.available(), output_tail_bytes=256,
    )  # fmt: skip
    base.update(kw)
    return Limits(**base)  # type: ignore[arg-type]


def test_confined_child_reports_and_drops_privileges(data: SandboxData) -> None:
    code = with_prefix("print('uid', torch.serialization.os.getuid())")
    r = run_confined(task(code), data, limits())
    assert r.status == common.STATUS_OK, r.message
    assert r.outputs is not None and r.outputs.shape == (20, 10)
    if UID is not None:
        assert f"uid {UID}" in r.output_tail


def test_child_in_a_user_namespace_of_its_own_is_the_sandbox_uid(data: SandboxData) -> None:
    """How a non-root evaluator's child gets another uid than its worker (issue 11)."""
    code = with_prefix(
        "_os = torch.serialization.os\n"
        "print('ids', _os.getuid(), _os.geteuid(), _os.getgid(), _os.getegid())"
    )
    r = run_confined(task(code), data, limits(uid=65534, gid=65534, user_namespace=True))
    assert r.status == common.STATUS_OK, (r.message, r.output_tail)
    assert "ids 65534 65534 65534 65534" in r.output_tail


@pytest.mark.skipif(not seccomp_filter.available(), reason="needs seccomp bindings")
@pytest.mark.parametrize("call", ["unshare(0x10000000)", "setns(0, 0)"])
def test_a_child_in_its_own_user_namespace_cannot_make_another(data: SandboxData, call) -> None:  # type: ignore[no-untyped-def]
    code = with_prefix(f"import numpy.ctypeslib as _nc\n_nc.ctypes.CDLL(None).{call}")
    r = run_confined(task(code), data, limits(uid=65534, gid=65534, user_namespace=True))
    assert r.status == common.STATUS_SANDBOX_VIOLATION, (r.message, r.output_tail)


def test_wall_clock_limit_kills(data: SandboxData) -> None:
    t0 = time.monotonic()
    r = run_confined(task(with_prefix("while True:\n    pass")), data, limits(wall_s=1.5))
    assert r.status == common.STATUS_WALL_TIMEOUT
    assert r.last_stage == common.STAGE_POLICY
    assert time.monotonic() - t0 < 15


def test_cpu_limit_kills(data: SandboxData) -> None:
    r = run_confined(task(with_prefix("while True:\n    pass")), data, limits(cpu_s=1.0))
    assert r.status == common.STATUS_CPU_TIMEOUT, r.message


@pytest.mark.skipif(not seccomp_filter.available(), reason="needs seccomp bindings")
def test_forbidden_system_call_is_a_sandbox_violation(data: SandboxData) -> None:
    code = with_prefix("getattr(torch.serialization.os, 'ex' + 'ecv')('/bin/true', ['true'])")
    r = run_confined(task(code), data, limits())
    assert r.status == common.STATUS_SANDBOX_VIOLATION


def test_exit_without_report_is_no_result(data: SandboxData) -> None:
    r = run_confined(task(with_prefix("torch.serialization.os._exit(3)")), data, limits())
    assert r.status == common.STATUS_NO_RESULT
    assert "code 3" in r.message


def test_progress_survives_a_timeout_in_training(data: SandboxData) -> None:
    code = replace(
        "for inputs, labels in train_data:",
        "while True:\n            pass\n        for inputs, labels in train_data:",
    )
    r = run_confined(task(code), data, limits(wall_s=3.0))
    assert r.status == common.STATUS_WALL_TIMEOUT
    assert r.last_stage == common.STAGE_FORWARD_PROBE
    assert r.parameter_count == 5612


def test_output_tail_is_bounded(data: SandboxData) -> None:
    code = with_prefix("for i in range(20000):\n    print('line', i)")
    r = run_confined(task(code), data, limits())
    assert r.status == common.STATUS_OK
    assert len(r.output_tail) <= 256 and "line 19999" in r.output_tail


def test_cancel_through_the_watched_fd(data: SandboxData) -> None:
    rfd, wfd = os.pipe()
    threading.Timer(0.5, lambda: os.write(wfd, b"C")).start()
    try:
        r = run_confined(
            task(with_prefix("while True:\n    pass")),
            data,
            limits(),
            watch_fd=rfd,
            on_watch=lambda: os.read(rfd, 1) == b"C",
        )
    finally:
        os.close(rfd)
        os.close(wfd)
    assert r.status == common.STATUS_CANCELLED


def test_strict_sandbox_sees_gpu_devices_and_driver_paths(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A GPU's device nodes are bound into the bubblewrap view and the variables that select
    GPUs and locate the driver pass through --clearenv; without them CUDA cannot start there.
    (Device nodes cannot be made here: plain files stand in for /dev/nvidia*.)"""
    from services.evaluator import sandbox

    for name in ("nvidiactl", "nvidia0", "nvidia-uvm"):
        (tmp_path / name).touch()
    monkeypatch.setattr(sandbox, "GPU_DEVICE_GLOBS", (f"{tmp_path}/nvidia*",))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/usr/local/nvidia/lib64")
    monkeypatch.delenv("NVIDIA_VISIBLE_DEVICES", raising=False)
    args = sandbox.bwrap_command("bwrap", tmp_path, 1 << 20)
    binds = {args[i + 1] for i, a in enumerate(args) if a == "--dev-bind"}
    assert binds == {str(tmp_path / n) for n in ("nvidiactl", "nvidia0", "nvidia-uvm")}
    assert args.index("--dev") < min(i for i, a in enumerate(args) if a == "--dev-bind")
    env = {args[i + 1]: args[i + 2] for i, a in enumerate(args) if a == "--setenv"}
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
    assert env["LD_LIBRARY_PATH"] == "/usr/local/nvidia/lib64"
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    assert args.index("--clearenv") < args.index("CUDA_VISIBLE_DEVICES")


def test_strict_view_without_a_base_site_packages(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A base interpreter with no site-packages of its own (Ubuntu's python3 under a venv, as on
    the GPU machine) has nothing to hide: bubblewrap cannot make a mount point inside the
    read-only /usr, and the worker would not start. getpass.getuser(), which torch calls on
    import, finds USER: there is no /etc/passwd inside."""
    from services.evaluator import sandbox

    real = sandbox.sysconfig.get_paths
    missing = tmp_path / "no-such" / "site-packages"

    def get_paths(*args, **kwargs):  # type: ignore[no-untyped-def]
        paths = dict(real(*args, **kwargs))
        if kwargs.get("vars"):
            paths["purelib"] = str(missing)
        return paths

    monkeypatch.setattr(sandbox.sysconfig, "get_paths", get_paths)
    args = sandbox.bwrap_command("bwrap", tmp_path, 1 << 20)
    assert str(missing) not in args
    assert str(sandbox.view.site_packages()) in args  # the venv's own is still emptied
    env = {args[i + 1]: args[i + 2] for i, a in enumerate(args) if a == "--setenv"}
    assert env["USER"] == env["LOGNAME"] == "sandbox"


def _tmpfs_plan(args: list[str]) -> dict[str, list[str]]:
    """Each directory the view empties (--tmpfs) and what is bound back into it before it is
    made read-only."""
    plan: dict[str, list[str]] = {}
    for i, a in enumerate(args):
        if a == "--tmpfs" and args[i + 1] != "/tmp":
            sp = args[i + 1]
            end = args.index("--remount-ro", i)
            assert args[end + 1] == sp
            plan[sp] = [args[j + 1] for j in range(i, end) if args[j] == "--ro-bind"]
    return plan


def test_default_globs_cover_the_system_package_dirs() -> None:
    """Debian's (and Ubuntu's) system-wide package directories, which /usr's bind exposes to a
    worker of any interpreter: python3-sklearn would put the digits test set there."""
    from fnmatch import fnmatch

    from services.evaluator import sandbox

    for path in (
        "/usr/lib/python3/dist-packages", "/usr/lib/python3.11/dist-packages",
        "/usr/local/lib/python3.12/dist-packages", "/usr/lib64/python3.11/site-packages",
        "/usr/local/lib/python3.11/site-packages",
    ):  # fmt: skip
        assert any(fnmatch(path, g) for g in sandbox.SYSTEM_PACKAGE_GLOBS), path


def test_strict_view_hides_system_dist_packages(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from services.evaluator import sandbox

    system = [
        tmp_path / "usr/lib/python3/dist-packages",
        tmp_path / "usr/lib/python3.11/dist-packages",
        tmp_path / "usr/local/lib/python3.11/dist-packages",
    ]
    for d in system:
        (d / "sklearn/datasets/data").mkdir(parents=True)
    on_base_path = tmp_path / "opt/base/lib/python3.11/site-packages"
    on_base_path.mkdir(parents=True)
    (tmp_path / "opt/base/lib/python3.11/lib-dynload").mkdir()
    globs = (f"{tmp_path}/usr/lib/python3*/dist-packages", f"{tmp_path}/usr/local/lib/*/*-packages")
    monkeypatch.setattr(sandbox, "SYSTEM_PACKAGE_GLOBS", globs)
    monkeypatch.setattr(
        sandbox, "_base_sys_path",
        lambda: (str(on_base_path), str(tmp_path / "opt/base/lib/python3.11/lib-dynload")),
    )  # fmt: skip
    plan = _tmpfs_plan(sandbox.bwrap_command("bwrap", tmp_path / "data", 1 << 20))
    for d in [*system, on_base_path]:
        assert plan[str(d)] == [], d  # emptied, nothing bound back
    assert str(tmp_path / "opt/base/lib/python3.11/lib-dynload") not in plan
    assert plan[str(sandbox.view.site_packages().resolve())]  # the allowed entries
    # On this machine: every system package directory that exists is emptied.
    import glob

    real = {d for g in ("/usr/lib/python3*/*-packages", "/usr/local/lib/python3*/*-packages")
            for d in glob.glob(g)}  # fmt: skip
    monkeypatch.undo()
    plan = _tmpfs_plan(sandbox.bwrap_command("bwrap", tmp_path / "data", 1 << 20))
    assert real <= set(plan), real - set(plan)


def test_base_sys_path_is_the_base_interpreters() -> None:
    import sys

    from services.evaluator import sandbox

    path = sandbox._base_sys_path()
    assert any(p.endswith(("site-packages", "dist-packages")) for p in path), path
    assert not any(p.startswith(sys.prefix + "/") for p in path) or sys.prefix == sys.base_prefix


def test_allowed_packages_of_a_system_site_venv_stay_visible(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A venv that sees the system's packages may get numpy from Debian's dist-packages: the
    directory is emptied like any other and only the allowed entries are bound back into it."""
    from services.evaluator import sandbox

    dist = tmp_path / "usr/lib/python3/dist-packages"
    for name in ("numpy", "numpy-1.24.2.egg-info", "sklearn"):
        (dist / name).mkdir(parents=True)
    allowed = (dist / "numpy", dist / "numpy-1.24.2.egg-info")
    monkeypatch.setattr(
        sandbox, "SYSTEM_PACKAGE_GLOBS", (f"{tmp_path}/usr/lib/python3*/dist-packages",)
    )
    monkeypatch.setattr(sandbox.view, "allowed_entries", lambda: allowed)
    plan = _tmpfs_plan(sandbox.bwrap_command("bwrap", tmp_path / "data", 1 << 20))
    assert plan[str(dist)] == [str(p) for p in allowed]


def test_entries_of_a_debian_egg_info(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Debian's egg-info directories list no files: top_level.txt names the entries."""
    import importlib.metadata as md

    from services.evaluator import view

    meta = tmp_path / "foo-1.0.egg-info"
    meta.mkdir()
    (meta / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: foo\nVersion: 1.0\n")
    (meta / "top_level.txt").write_text("foo\n_foo\n")
    (tmp_path / "foo").mkdir()
    (tmp_path / "_foo.cpython-311-x86_64-linux-gnu.so").touch()
    (tmp_path / "sklearn").mkdir()
    entries = view.entries_of(md.PathDistribution(meta))
    assert entries == {meta, tmp_path / "foo", tmp_path / "_foo.cpython-311-x86_64-linux-gnu.so"}
