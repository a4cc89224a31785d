"""Can Triton build and load its C stubs here? Run inside a GPU image (smoke.sh), on the CPU.

Triton compiles a small C extension the first time a process uses its GPU driver (for vLLM: its
Triton kernels, LoRA's among them): ``triton.runtime.build`` finds ``gcc`` or ``clang`` (or
``$CC``), compiles against the interpreter's ``Python.h``, caches the ``.so`` under
``TRITON_CACHE_DIR`` (default ``~/.triton/cache``) and imports it. Without a compiler that first
use fails with "Failed to find C compiler". This check goes through the same functions, with no
GPU and no kernel launch:

1. ``compile_module_from_src`` builds a one-function extension, imports it and calls it
   (compiler found, Python headers present, cache directory writable, the module loads);
2. Triton's own CUDA driver stub (``backends/nvidia/driver.c``) is compiled and linked with
   Triton's build command and its CUDA headers, without libcuda (a CPU machine has none; on a
   GPU node the NVIDIA container toolkit mounts it). Loading that one needs the driver, so it is
   compiled only.

Exit 0 with one line per check when both pass; otherwise exit 1 naming what failed.
Standard library and Triton only (``python3 triton_check.py`` or ``python3 -c "$(cat ...)"``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

STUB = r"""
#include <Python.h>
static PyObject *answer(PyObject *self, PyObject *args) { return PyLong_FromLong(42); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "nasloop_triton_stub", NULL, -1,
                                    methods};
PyMODINIT_FUNC PyInit_nasloop_triton_stub(void) { return PyModule_Create(&module); }
"""


def check_stub() -> str:
    from triton.runtime.build import compile_module_from_src

    module = compile_module_from_src(src=STUB, name="nasloop_triton_stub")
    if module.answer() != 42:
        raise RuntimeError(f"the stub loaded but answered {module.answer()!r}")
    return f"compiled, loaded and called a C stub ({module.__file__})"


def check_driver_stub() -> str:
    import triton
    from triton.runtime import build

    nvidia = Path(triton.__file__).parent / "backends" / "nvidia"
    source = nvidia / "driver.c"
    if not source.is_file():
        raise RuntimeError(f"{source} is missing: not a CUDA build of Triton")
    with tempfile.TemporaryDirectory() as tmp:
        so = build._build("cuda_utils", str(source), tmp, [], [str(nvidia / "include")], [], [])
        size = Path(so).stat().st_size
    return f"compiled Triton's CUDA driver stub {source.name} ({size} bytes; not loaded: no GPU)"


def main() -> int:
    try:
        import triton
    except ImportError as e:
        print(f"FAILED: triton does not import: {e}", file=sys.stderr)
        return 1
    failed = False
    for check in (check_stub, check_driver_stub):
        try:
            print(f"ok: triton {triton.__version__}: {check()}")
        except Exception as e:
            failed = True
            print(f"FAILED: {check.__name__}: {type(e).__name__}: {e}", file=sys.stderr)
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
