"""``python -m npu_syncbn.info``: what a bug report needs, one ``name: value`` a line.

Versions (python, npu_syncbn, torch, torch-npu, CANN), the NPU op route
(``ascendc``: our kernels, ``aten-fallback``: torch-npu's aclnn ops), the NPU's
SoC and vector-core count when one is visible, the CPU transport and check
level the environment selects, the twin / CPU kernel libraries, the
instruction-set variant the CPU kernels run, and whether the emulated NPU
device is built for the current sources. Every item is read on its own: a
failure prints as that item's value, never a traceback, and the command exits
0. Nothing is built.
"""
from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import platform
import re
import sys
from typing import Callable, List, Optional, Tuple

# The toolkit records its version in <arch>-linux/ascend_toolkit_install.info (CANN's
# install guide, "File Paths"); its packages carry version.info files.
_CANN_VERSION_FILES = ("*-linux/ascend_toolkit_install.info", "compiler/version.info", "runtime/version.info")


def _python() -> str:
    return f"{platform.python_version()} ({sys.executable})"


def _npu_syncbn() -> str:
    from .version import __version__

    return f"{__version__} ({os.path.dirname(os.path.abspath(__file__))})"


def _torch() -> str:
    import torch

    return f"{torch.__version__} (cxx11 abi {int(torch._C._GLIBCXX_USE_CXX11_ABI)})"


def _torch_npu():
    """The torch_npu module, or None when it is not installed."""
    if importlib.util.find_spec("torch_npu") is None:
        return None
    return importlib.import_module("torch_npu")


def _torch_npu_version() -> str:
    mod = _torch_npu()
    return "not installed" if mod is None else getattr(mod, "__version__", "unknown version")


def cann_version(root: Optional[str]) -> str:
    if not root:
        return "not found (ASCEND_HOME_PATH unset)"
    for pattern in _CANN_VERSION_FILES:
        for path in sorted(glob.glob(os.path.join(root, pattern))):
            with open(path, errors="replace") as f:
                found = re.search(r"^\s*version\s*=\s*(\S+)", f.read(), re.M | re.I)
            if found:
                return f"{found.group(1)} ({path})"
    return f"unknown (no version file under {root})"


def _route() -> str:
    from .ops import npu

    path = npu.custom_kernel_path()
    if npu.ROUTE == "emulated":
        return "emulated (our AscendC kernels in the CPU twin on the emulated npu; NPU_SYNCBN_EMULATE_NPU=1)"
    if npu.ROUTE == "ascendc":
        return f"ascendc ({path}; float64 input takes torch-npu's aclnn ops)"
    if _torch_npu() is None:
        return (f"{npu.ROUTE} (torch-npu not installed: no NPU here; "
                "NPU_SYNCBN_EMULATE_NPU=1 runs our kernels on the emulated npu)")
    return f"{npu.ROUTE} (torch-npu's aclnn ops; no {npu.LIBRARY_FILE}: build it with python -m npu_syncbn.npu_build)"


def _npu() -> str:
    from . import emulation

    if emulation.active():
        import torch

        from . import twin

        soc = twin.soc()
        return (f"{torch.npu.device_count()} emulated (NPU_SYNCBN_EMULATE_DEVICES); kernels checked as "
                f"{soc['name']}: vector cores {soc['vector_cores']}, UB {soc['ub_bytes']} B")
    if _torch_npu() is None:
        return "none visible (torch-npu not installed)"
    import torch

    if not torch.npu.is_available():
        return "none visible (torch.npu.is_available() is False)"
    props = torch.npu.get_device_properties(0)
    cores = getattr(props, "vector_core_num", "unknown")
    return (f"{torch.npu.device_count()} visible; device 0: SoC {torch.npu.get_device_name(0)}, "
            f"vector cores {cores}")


def _cpu_transport() -> str:
    from . import shm

    world = int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("WORLD_SIZE") or 2)
    chosen = "shared-memory channel" if shm.wanted(world) else "gloo"
    return f"{shm.mode()} (${shm.ENV}); {world} ranks on this host's {os.cpu_count()} cores: {chosen}"


def _check_level() -> str:
    import torch

    from . import function

    cpu_first = function.check_level(torch.device("cpu"), True)
    cpu_later = function.check_level(torch.device("cpu"), False)
    npu = function.check_level(torch.device("meta"), True)  # any non-CPU device
    setting = os.environ.get(function.ENV_CHECK, "auto")
    return f"{setting} (${function.ENV_CHECK}); CPU: {cpu_first} on a layer's first call, then {cpu_later}; NPU: {npu}"


def _library(env: str, name_attr: str, fresh_attr: str) -> Callable[[], str]:
    def status() -> str:
        from . import twin_build

        name = getattr(twin_build, name_attr)
        places = [os.path.join(d, name) for d in (twin_build.default_out_dir(), twin_build.cache_out_dir())]
        path = os.environ.get(env) or next((p for p in places if os.path.isfile(p)), places[0])
        if not os.path.isfile(path):
            return f"not built ({path}; built on first use)"
        try:
            fresh = getattr(twin_build, fresh_attr)(path)
        except twin_build.TwinBuildError:  # no sources next to the package: the installed build serves
            fresh = True
        return f"built ({path})" if fresh else f"built but older than its sources ({path}; rebuilt on first use)"
    return status


def _cpu_isa() -> str:
    """The CPU kernels' instruction-set variant, read from the built library (not loaded for use, not built)."""
    from . import twin_build
    from .ops import cpu_fast

    path = os.environ.get("NPU_SYNCBN_CPU_LIB") or os.path.join(twin_build.default_out_dir(), twin_build.CPU_LIB_NAME)
    if not os.path.isfile(path):
        return "known once the cpu library is built"
    runs = cpu_fast.ISA_NAMES[: twin_build.load(path, {"nsb_isa_best": []}).nsb_isa_best() + 1]
    forced = os.environ.get(cpu_fast.ISA_ENV, "").strip().lower() or "auto"
    chosen = runs[-1] if forced == "auto" else forced
    note = "" if forced == "auto" or forced in runs else "; error: this CPU cannot run it"
    return f"{chosen} (${cpu_fast.ISA_ENV}={forced}{note}; this CPU runs {', '.join(runs)})"


def _emulated_device() -> str:
    from .emulation import device

    lib = device.built_library()
    if lib:
        return f"built ({lib})"
    return ("not built (built on first use under NPU_SYNCBN_EMULATE_NPU=1, a few minutes, or by "
            "bash ci/install.sh npu; needs g++ and ninja)")


ITEMS: List[Tuple[str, Callable[[], str]]] = [
    ("python", _python),
    ("npu_syncbn", _npu_syncbn),
    ("torch", _torch),
    ("torch-npu", _torch_npu_version),
    ("CANN", lambda: cann_version(os.environ.get("ASCEND_HOME_PATH") or os.environ.get("ASCEND_TOOLKIT_HOME"))),
    ("npu route", _route),
    ("npu", _npu),
    ("cpu transport", _cpu_transport),
    ("check level", _check_level),
    ("twin library", _library("NPU_SYNCBN_TWIN_LIB", "LIB_NAME", "up_to_date")),
    ("cpu library", _library("NPU_SYNCBN_CPU_LIB", "CPU_LIB_NAME", "cpu_up_to_date")),
    ("cpu kernels isa", _cpu_isa),
    ("emulated device", _emulated_device),
]


def report() -> List[str]:
    lines = []
    for name, item in ITEMS:
        try:
            value = item()
        except Exception as exc:  # torch-npu without CANN fails in many ways; say how and go on
            value = f"error: {type(exc).__name__}: {exc}"
        lines.append(f"{name}: {value}")
    return lines


def main() -> int:
    print("\n".join(report()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
