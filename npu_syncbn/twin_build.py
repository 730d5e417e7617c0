"""Builds the CPU twin of the AscendC kernels: ``<out_dir>/libnpu_syncbn_twin.so``,
and the fused CPU kernels of the ops: ``<out_dir>/libnpu_syncbn_cpu.so``.

Standard library only: setup.py runs this file with runpy before torch may be
importable. The kernel sources in ``op_kernels/`` (next to the package, which
is installed editable) are compiled unmodified with g++ against our own
AscendC API twin (``op_kernels/twin/include``); no CANN, no torch headers.

The CPU kernels (``op_kernels/cpu/``, used by ``npu_syncbn/ops/cpu_fast.py``)
are plain C++ with a C ABI, built ``-O3 -fopenmp`` for the baseline x86-64 (no
``-march=native``: the library may be built on one machine and run on another;
no ``-ffast-math``: NaN/Inf must propagate). Where the compiler has no OpenMP
they are built without it and run single-threaded.

Usage: ``build(out_dir=None, quiet=False) -> path`` (builds both libraries,
returns the twin's path), ``build_cpu(out_dir=None, quiet=False) -> path`` or
``python -m npu_syncbn.twin_build [out_dir]``.
"""
from __future__ import annotations

import ctypes
import glob
import os
import shutil
import subprocess
import sys
from typing import Dict, List, Optional

LIB_NAME = "libnpu_syncbn_twin.so"
CXXFLAGS = ["-O2", "-std=c++17", "-fPIC", "-shared", "-pthread"]
CPU_LIB_NAME = "libnpu_syncbn_cpu.so"
CPU_CXXFLAGS = ["-O3", "-std=c++17", "-fPIC", "-shared", "-fno-math-errno"]
CPU_OPENMP = ["-fopenmp"]

_HERE = os.path.dirname(os.path.abspath(__file__))


class TwinBuildError(RuntimeError):
    """The twin library could not be built (no g++, missing sources, compile error)."""


def kernels_root() -> str:
    """``op_kernels/`` at the repository root (the package's parent directory)."""
    root = os.path.join(os.path.dirname(_HERE), "op_kernels")
    if not os.path.isdir(root):
        raise TwinBuildError(f"kernel sources not found at {root} (npu_syncbn must be installed editable from its repo)")
    return root


def _source_root_unless_prebuilt(lib: str) -> Optional[str]:
    """The kernel source root; None when the sources are not installed (a
    wheel) but ``lib`` was built at install time, which then serves as is."""
    try:
        return kernels_root()
    except TwinBuildError:
        if os.path.exists(lib):
            return None
        raise


def sources(root: Optional[str] = None) -> List[str]:
    """Translation units of the twin library: runtime, C ABI, host tiling, the
    kernels and the test-only kernels (broken ones for the rules, timing ones
    for the timing model)."""
    root = root or kernels_root()
    files = [
        os.path.join(root, "twin", "runtime.cpp"),
        os.path.join(root, "twin", "capi.cpp"),
        os.path.join(root, "twin", "capi_timing.cpp"),
        os.path.join(root, "host", "tiling.cpp"),
        os.path.join(root, "host", "soc.cpp"),
        os.path.join(root, "twin", "tests", "broken_kernels.cpp"),
        os.path.join(root, "twin", "tests", "timing_kernels.cpp"),
    ]
    files += sorted(glob.glob(os.path.join(root, "kernels", "batch_norm_*.cpp")))
    return files


def _inputs(root: str) -> List[str]:
    pattern = ("*.cpp", "*.h")
    found = []
    for sub in ("include", "host", "kernels", "twin", os.path.join("twin", "include"), os.path.join("twin", "tests")):
        for p in pattern:
            found += glob.glob(os.path.join(root, sub, p))
    return [f for f in found if not f.endswith("npu_ops.cpp")]


def default_out_dir() -> str:
    return os.path.join(_HERE, "_lib")


def _newer_than_all(lib: str, inputs: List[str]) -> bool:
    """True when ``lib`` exists and is newer than every file of ``inputs``."""
    if not os.path.exists(lib):
        return False
    return not inputs or os.path.getmtime(lib) >= max(os.path.getmtime(f) for f in inputs)


def up_to_date(lib: str, root: Optional[str] = None) -> bool:
    """True when ``lib`` exists and is newer than every twin source and header."""
    return _newer_than_all(lib, _inputs(root or kernels_root()))


def load(path: str, signatures: Dict[str, list]) -> ctypes.CDLL:
    """Load a built library and declare its C functions (argument types from
    ``signatures``, int return codes)."""
    lib = ctypes.CDLL(path)
    for name, argtypes in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = ctypes.c_int
    return lib


def build(out_dir: Optional[str] = None, quiet: bool = False) -> str:
    """Compiles the twin library and the CPU kernel library into ``out_dir``
    (default ``npu_syncbn/_lib``) unless they are up to date; returns the twin's
    path. Raises TwinBuildError."""
    lib = build_twin(out_dir, quiet)
    try:
        build_cpu(out_dir, quiet)
    except TwinBuildError as exc:  # optional: the CPU ops fall back to aten without it
        if not quiet:
            print(f"npu_syncbn: CPU kernel library not built ({exc}); CPU ops use aten", file=sys.stderr)
    return lib


def _compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++")
    if not cxx or not shutil.which(cxx):
        raise TwinBuildError("g++ not found: install a C++17 compiler (e.g. apt-get install g++) to build the kernel twin")
    return cxx


def cpu_sources(root: Optional[str] = None) -> List[str]:
    """Translation units of the CPU kernel library (``op_kernels/cpu/*.cpp``)."""
    return sorted(glob.glob(os.path.join(root or kernels_root(), "cpu", "*.cpp")))


def cpu_up_to_date(lib: str, root: Optional[str] = None) -> bool:
    """True when ``lib`` exists and is newer than every CPU kernel source and header."""
    root = root or kernels_root()
    return _newer_than_all(lib, [f for p in ("*.cpp", "*.h") for f in glob.glob(os.path.join(root, "cpu", p))])


def build_cpu(out_dir: Optional[str] = None, quiet: bool = False) -> str:
    """Compiles the fused CPU kernels into ``out_dir``/libnpu_syncbn_cpu.so unless
    it is up to date (or already built and the sources are not installed);
    returns its path. Raises TwinBuildError."""
    out_dir = out_dir or default_out_dir()
    lib = os.path.join(out_dir, CPU_LIB_NAME)
    root = _source_root_unless_prebuilt(lib)
    if root is None or cpu_up_to_date(lib, root):
        return lib
    srcs = cpu_sources(root)
    if not srcs:
        raise TwinBuildError(f"CPU kernel sources not found under {os.path.join(root, 'cpu')}")
    cxx = _compiler()
    os.makedirs(out_dir, exist_ok=True)
    tmp = f"{lib}.tmp{os.getpid()}"
    err = ""
    for extra in (CPU_OPENMP, []):  # without OpenMP the kernels run single-threaded
        cmd = [cxx, *CPU_CXXFLAGS, *extra, *srcs, "-o", tmp]
        if not quiet:
            print("npu_syncbn: building CPU kernels:", " ".join(cmd), file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            os.replace(tmp, lib)
            return lib
        err = proc.stderr[-4000:]
    raise TwinBuildError(f"g++ failed to build the CPU kernels:\n{err}")


def build_twin(out_dir: Optional[str] = None, quiet: bool = False) -> str:
    """Compiles the twin library into ``out_dir`` (default ``npu_syncbn/_lib``)
    unless it is up to date; returns its path. Raises TwinBuildError."""
    out_dir = out_dir or default_out_dir()
    lib = os.path.join(out_dir, LIB_NAME)
    root = _source_root_unless_prebuilt(lib)
    if root is None or up_to_date(lib, root):
        return lib
    cxx = _compiler()
    os.makedirs(out_dir, exist_ok=True)
    includes = [f"-I{os.path.join(root, d)}" for d in ("include", os.path.join("twin", "include"), "host", "kernels")]
    tmp = f"{lib}.tmp{os.getpid()}"
    cmd = [cxx, *CXXFLAGS, *includes, *sources(root), "-o", tmp]
    if not quiet:
        print("npu_syncbn: building kernel twin:", " ".join(cmd), file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise TwinBuildError(f"g++ failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    os.replace(tmp, lib)  # atomic: a concurrent loader never sees a half-written library
    return lib


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        path = build(argv[0] if argv else None)
    except TwinBuildError as exc:
        print(f"npu_syncbn: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
