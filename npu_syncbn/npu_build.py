"""Builds the AscendC kernels and their torch-npu launch glue on an Ascend machine
into ``npu_syncbn/_lib/libnpu_syncbn_npu.so`` (op_kernels/CMakeLists.txt: CANN's
``ascendc_library`` for the kernels, g++ for host/npu_ops.cpp).

Standard library only: setup.py runs this file with runpy, where torch may not
be importable; torch and torch_npu are probed in a subprocess of the Python
the library is built for. Needs CANN (``ASCEND_HOME_PATH``, from set_env.sh),
torch-npu importable by that Python, and cmake.

The SoC the kernels are compiled for: ``$NPU_SYNCBN_SOC``, else the name of
NPU 0 (torch_npu, then ``npu-smi info``), else Ascend910B2. 910B1-B4 and
910_93 share one build mode; the glue reads core count and UB size at run time.

    python -m npu_syncbn.npu_build [--build-dir DIR]   # exits 1 on failure, 2 if it cannot build here
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from typing import Iterable, Optional, Tuple

LIB_NAME = "libnpu_syncbn_npu.so"
ENV_SOC = "NPU_SYNCBN_SOC"
DEFAULT_SOC = "Ascend910B2"

_HERE = os.path.dirname(os.path.abspath(__file__))
# op_kernels/ of a checkout, else the copy an installed package carries (setup.py puts it there)
_KERNELS = next((d for d in (os.path.join(os.path.dirname(_HERE), "op_kernels"), os.path.join(_HERE, "_op_kernels"))
                 if os.path.isdir(d)), os.path.join(os.path.dirname(_HERE), "op_kernels"))
_PROBE = (
    "import torch, torch_npu\n"
    "try:\n    print(torch.npu.get_device_name(0) if torch.npu.is_available() else '')\n"
    "except Exception:\n    print('')\n"
)


class NpuBuildError(RuntimeError):
    """CMake failed, or built no library."""


def cann_root() -> Optional[str]:
    return os.environ.get("ASCEND_HOME_PATH") or os.environ.get("ASCEND_TOOLKIT_HOME") or None


def probe(python: str = sys.executable) -> Tuple[Optional[str], str]:
    """(why the library cannot be built here or None, name of NPU 0 or '')."""
    if not cann_root():
        return "no CANN toolkit (ASCEND_HOME_PATH unset; source CANN's set_env.sh)", ""
    if not os.path.isdir(_KERNELS):
        return f"kernel sources not found at {_KERNELS} (reinstall npu_syncbn from its repository, sdist or wheel)", ""
    try:
        run = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {python} to import torch_npu ({exc})", ""
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        return f"torch_npu is not importable by {python} ({last})", ""
    if shutil.which("cmake") is None:
        return "cmake not found", ""
    return None, run.stdout.strip()


def _soc_from_npu_smi() -> str:
    try:
        out = subprocess.run(["npu-smi", "info"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    found = re.search(r"\b(910B[1-4]|910_93\d*|310P\d?)\b", out)
    return "Ascend" + found.group(1) if found else ""


def soc(device_name: str = "") -> str:
    """SoC to compile for: $NPU_SYNCBN_SOC, the detected device, else Ascend910B2."""
    chosen = os.environ.get(ENV_SOC) or (device_name if device_name.startswith("Ascend") else "")
    return chosen or _soc_from_npu_smi() or DEFAULT_SOC


def _run(cmd, log) -> None:
    print("+ " + " ".join(cmd), file=log, flush=True)
    if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
        where = "" if log is sys.stderr else f" (log: {log.name})"
        raise NpuBuildError(f"{' '.join(cmd[:2])} failed{where}")


def build(soc_version: str, prefixes: Iterable[str] = (_HERE,), build_dir: Optional[str] = None,
          python: str = sys.executable, quiet: bool = False) -> str:
    """Configure, build and install the glue library into ``<prefix>/_lib`` of
    each prefix (a package directory); returns the first installed path."""
    build_dir = build_dir or os.path.join(_KERNELS, "build_npu")
    os.makedirs(build_dir, exist_ok=True)
    # stdout stays free for the path main() prints (ci/npu_check.sh reads it).
    log = open(os.path.join(build_dir, "npu_build.log"), "w") if quiet else sys.stderr
    try:
        _run(["cmake", "-S", _KERNELS, "-B", build_dir, f"-DSOC_VERSION={soc_version}",
              f"-DPython3_EXECUTABLE={python}"], log)
        _run(["cmake", "--build", build_dir, "--target", "npu_syncbn_npu", "-j", str(os.cpu_count() or 1)], log)
        installed = []
        for prefix in prefixes:
            _run(["cmake", "--install", build_dir, "--prefix", prefix, "--component", "npu"], log)
            installed.append(os.path.join(prefix, "_lib", LIB_NAME))
    finally:
        if log is not sys.stderr:
            log.close()
    missing = [p for p in installed if not os.path.isfile(p)]
    if missing:
        raise NpuBuildError(f"CMake installed no {LIB_NAME} at {missing[0]} (CMake skipped the NPU build: see its output)")
    return installed[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", default=None, help="CMake build directory (default op_kernels/build_npu)")
    args = parser.parse_args(argv)
    why_not, device = probe()
    if why_not:
        print(f"npu_syncbn: cannot build the AscendC kernels: {why_not}", file=sys.stderr)
        return 2
    try:
        print(build(soc(device), build_dir=args.build_dir))
    except NpuBuildError as exc:
        print(f"npu_syncbn: AscendC kernel build failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
