"""Builds the CPU twin of the AscendC kernels: ``<out_dir>/libnpu_syncbn_twin.so``,
and the fused CPU kernels of the ops: ``<out_dir>/libnpu_syncbn_cpu.so``.

Standard library only: setup.py runs this file with runpy before torch may be
importable. The kernel sources (:func:`kernels_root`: ``op_kernels/`` of a
checkout, or the copy an installed package carries) are compiled unmodified
with g++ against our own AscendC API twin (``op_kernels/twin/include``); no
CANN, no torch headers.

The CPU kernels (``op_kernels/cpu/``, used by ``npu_syncbn/ops/cpu_fast.py``)
are plain C++ with a C ABI, built ``-O3 -fopenmp`` for the baseline x86-64 (no
``-march=native``: the library may be built on one machine and run on another;
no ``-ffast-math``: NaN/Inf must propagate). Where the compiler has no OpenMP
they are built without it and run single-threaded.

A library is up to date when the digest of its sources (paths relative to the
kernel root, contents, compiler flags) matches the one recorded beside it
(``<lib>.inputs``): file times change when a wheel is unpacked, contents do
not. Builds hold a lock per library (``build_lock``), so ranks that start
together build once, and a build killed at any moment leaves nothing a later
run waits on. Each build says what it builds and how long it took.

Usage: ``build(out_dir=None, quiet=False) -> path`` (builds both libraries,
returns the twin's path), ``build_cpu(out_dir=None, quiet=False) -> path`` or
``python -m npu_syncbn.twin_build [--only twin|cpu] [out_dir]`` (also runs as
a plain file, ``python npu_syncbn/twin_build.py``, without importing torch).
"""
from __future__ import annotations

import ctypes
import glob
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional

LIB_NAME = "libnpu_syncbn_twin.so"
CXXFLAGS = ["-O2", "-std=c++17", "-fPIC", "-shared", "-pthread"]
CPU_LIB_NAME = "libnpu_syncbn_cpu.so"
CPU_CXXFLAGS = ["-O3", "-std=c++17", "-fPIC", "-shared", "-fno-math-errno"]
CPU_OPENMP = ["-fopenmp"]
# Where an installed package keeps its copy of op_kernels/ (setup.py puts it there).
PACKAGED_KERNELS = "_op_kernels"
ENV_CACHE = "NPU_SYNCBN_CACHE"

_HERE = os.path.dirname(os.path.abspath(__file__))


def _sibling(name: str):
    """A module of this package by path: setup.py runs this file outside the package."""
    if __package__:
        return importlib.import_module(f"{__package__}.{name}")
    spec = importlib.util.spec_from_file_location(f"_npu_syncbn_{name}", os.path.join(_HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_lock = _sibling("build_lock")


class TwinBuildError(RuntimeError):
    """The twin library could not be built (no g++, missing sources, compile error)."""


def kernel_roots() -> List[str]:
    """Where the kernel sources may be, in order: ``op_kernels/`` beside the
    package (a checkout or an editable install), then the copy inside the
    package (a wheel or ``pip install .``)."""
    return [os.path.join(os.path.dirname(_HERE), "op_kernels"), os.path.join(_HERE, PACKAGED_KERNELS)]


def kernels_root() -> str:
    """The kernel sources (see :func:`kernel_roots`)."""
    for root in kernel_roots():
        if os.path.isdir(os.path.join(root, "kernels")):
            return root
    checkout, packaged = kernel_roots()
    raise TwinBuildError(f"kernel sources not found at {checkout} (a checkout) nor {packaged} (an installed "
                         "package): reinstall npu_syncbn from its repository, its sdist or its wheel")


def sources(root: Optional[str] = None) -> List[str]:
    """Translation units of the twin library: runtime, C ABI, host tiling, the
    kernels and the test-only kernels (broken ones for the rules, timing ones
    for the timing model)."""
    root = root or kernels_root()
    files = [
        os.path.join(root, "twin", "runtime.cpp"),
        os.path.join(root, "twin", "capi.cpp"),
        os.path.join(root, "twin", "capi_timing.cpp"),
        os.path.join(root, "twin", "capi_tiling.cpp"),
        os.path.join(root, "host", "tiling.cpp"),
        os.path.join(root, "host", "soc.cpp"),
        os.path.join(root, "twin", "tests", "broken_kernels.cpp"),
        os.path.join(root, "twin", "tests", "timing_kernels.cpp"),
    ]
    files += sorted(glob.glob(os.path.join(root, "kernels", "batch_norm_*.cpp")))
    return files


def _inputs(root: str) -> List[str]:
    found = []
    for sub in ("include", "host", "kernels", "twin", os.path.join("twin", "include"), os.path.join("twin", "tests")):
        for pattern in ("*.cpp", "*.h"):
            found += glob.glob(os.path.join(root, sub, pattern))
    return sorted(f for f in found if not f.endswith("npu_ops.cpp"))


def _cpu_inputs(root: str) -> List[str]:
    return sorted(f for p in ("*.cpp", "*.h") for f in glob.glob(os.path.join(root, "cpu", p)))


def default_out_dir() -> str:
    return os.path.join(_HERE, "_lib")


def cache_out_dir() -> str:
    """Where libraries are built when the package's own ``_lib`` is not
    writable (a system-wide install): ``$NPU_SYNCBN_CACHE``, else
    ``$XDG_CACHE_HOME/npu_syncbn`` (``~/.cache/npu_syncbn``), then ``lib``."""
    base = os.environ.get(ENV_CACHE) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "npu_syncbn")
    return os.path.join(base, "lib")


def _writable(out_dir: str) -> bool:
    probe = out_dir
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    return os.access(probe, os.W_OK)


def digest(inputs: List[str], root: str, flags: List[str]) -> str:
    """sha256 of the inputs' paths relative to ``root``, their contents and the flags."""
    h = hashlib.sha256(" ".join(flags).encode())
    for path in inputs:
        h.update(os.path.relpath(path, root).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def _stamp(lib: str) -> str:
    return lib + ".inputs"


def _matches(lib: str, want: str) -> bool:
    try:
        with open(_stamp(lib)) as f:
            return os.path.exists(lib) and f.read().strip() == want
    except OSError:
        return False


def up_to_date(lib: str, root: Optional[str] = None) -> bool:
    """True when ``lib`` was built from the twin sources as they are now."""
    root = root or kernels_root()
    return _matches(lib, digest(_inputs(root), root, CXXFLAGS))


def cpu_up_to_date(lib: str, root: Optional[str] = None) -> bool:
    """True when ``lib`` was built from the CPU kernel sources as they are now."""
    root = root or kernels_root()
    return _matches(lib, digest(_cpu_inputs(root), root, CPU_CXXFLAGS))


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


def _fresh_or_build(out_dir: Optional[str], name: str, what: str, inputs_of, flags: List[str], compile_to) -> str:
    """The library ``name``: the one in ``out_dir`` (default: the package's
    ``_lib``, else the user cache) when built from the current sources, else
    built there under the build lock. ``compile_to(root, tmp_path)`` compiles."""
    candidates = [out_dir] if out_dir else [default_out_dir(), cache_out_dir()]
    try:
        root = kernels_root()
    except TwinBuildError:
        for d in candidates:  # no sources installed: a library built at install time serves as is
            if os.path.exists(os.path.join(d, name)):
                return os.path.join(d, name)
        raise
    want = digest(inputs_of(root), root, flags)
    for d in candidates:
        if _matches(os.path.join(d, name), want):
            return os.path.join(d, name)
    target = next((d for d in candidates if _writable(d)), candidates[-1])
    lib = os.path.join(target, name)
    os.makedirs(target, exist_ok=True)
    with build_lock.exclusive(lib + ".lock", what):
        if _matches(lib, want):  # another process built it while this one waited
            return lib
        start = time.monotonic()
        print(f"npu_syncbn: building {what} ({name}, g++, under a minute) into {target}",
              file=sys.stderr, flush=True)
        tmp = f"{lib}.tmp{os.getpid()}"
        try:
            compile_to(root, tmp)
            os.replace(tmp, lib)  # atomic: a concurrent loader never sees a half-written library
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        with open(_stamp(lib), "w") as f:
            f.write(want + "\n")
        print(f"npu_syncbn: built {what} in {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
    return lib


def _run_compiler(cmd: List[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise TwinBuildError(f"g++ failed to build {what} ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}")


def build_cpu(out_dir: Optional[str] = None, quiet: bool = False) -> str:
    """Compiles the fused CPU kernels into ``out_dir``/libnpu_syncbn_cpu.so unless
    it is up to date (or already built and the sources are not installed);
    returns its path. Raises TwinBuildError."""

    def compile_to(root: str, tmp: str) -> None:
        srcs = cpu_sources(root)
        if not srcs:
            raise TwinBuildError(f"CPU kernel sources not found under {os.path.join(root, 'cpu')}")
        cxx = _compiler()
        try:
            _run_compiler([cxx, *CPU_CXXFLAGS, *CPU_OPENMP, *srcs, "-o", tmp], "the CPU kernels")
        except TwinBuildError:  # without OpenMP the kernels run single-threaded
            _run_compiler([cxx, *CPU_CXXFLAGS, *srcs, "-o", tmp], "the CPU kernels")

    return _fresh_or_build(out_dir, CPU_LIB_NAME, "the CPU kernels", _cpu_inputs, CPU_CXXFLAGS, compile_to)


def build_twin(out_dir: Optional[str] = None, quiet: bool = False) -> str:
    """Compiles the twin library into ``out_dir`` (default ``npu_syncbn/_lib``)
    unless it is up to date; returns its path. Raises TwinBuildError."""

    def compile_to(root: str, tmp: str) -> None:
        cxx = _compiler()
        includes = [f"-I{os.path.join(root, d)}" for d in ("include", os.path.join("twin", "include"), "host", "kernels")]
        _run_compiler([cxx, *CXXFLAGS, *includes, *sources(root), "-o", tmp], "the kernel twin")

    return _fresh_or_build(out_dir, LIB_NAME, "the kernel twin", _inputs, CXXFLAGS, compile_to)


def main(argv: Optional[List[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m npu_syncbn.twin_build",
                                     description="Build the kernel twin and the CPU kernels (g++), unless up to date.")
    parser.add_argument("out_dir", nargs="?", default=None, help="where to put the libraries (default: npu_syncbn/_lib)")
    parser.add_argument("--only", choices=("twin", "cpu"), help="build one library only")
    parser.add_argument("--quiet", action="store_true", help="no closing line (builds still say what they build)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    builders = {"twin": build_twin, "cpu": build_cpu, None: build}
    try:
        path = builders[args.only](args.out_dir)
    except TwinBuildError as exc:
        print(f"npu_syncbn: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        names = {"twin": "the kernel twin", "cpu": "the CPU kernels", None: "the kernel twin and the CPU kernels"}
        print(f"npu_syncbn: {names[args.only]} up to date in {os.path.dirname(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
