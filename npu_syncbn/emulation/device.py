"""The emulated Ascend device: torch's PrivateUse1 backend renamed "npu", over
host memory (the C++ pieces are in ``csrc/device.cpp``, built on first use with
torch's extension builder and cached; the build holds ``build_lock`` so that
ranks starting together build once and a killed build never blocks a later
run). See ``npu_syncbn.emulation``."""
from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import shutil
import sys
import threading
import time
from types import ModuleType
from typing import Optional

import torch

from .. import build_lock

ENV_DEVICES = "NPU_SYNCBN_EMULATE_DEVICES"
DEFAULT_DEVICES = 8
_CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
_CFLAGS = "-O2"
_COMPLETE = "npu_syncbn_build_complete"  # written into torch's build folder once the library loads

_ext: Optional[ModuleType] = None
_lock = threading.Lock()


def device_count_from_environment() -> int:
    raw = os.environ.get(ENV_DEVICES, "")
    if not raw:
        return DEFAULT_DEVICES
    try:
        count = int(raw)
    except ValueError:
        raise ValueError(f"{ENV_DEVICES} must be an integer in 1..64, got {raw!r}") from None
    if not 1 <= count <= 64:
        raise ValueError(f"{ENV_DEVICES} must be an integer in 1..64, got {count}")
    return count


def _sources():
    """The device (csrc/device.cpp), its "hccl" backend (csrc/hccl.cpp), our ops' twin launches (csrc/kernels.cpp,
    over op_kernels/host/bn_ops.h) and what they run: the twin runtime, the
    host tiling, the SoC table and the AscendC kernel sources."""
    from .. import twin_build

    root = twin_build.kernels_root()
    sources = [os.path.join(_CSRC, "device.cpp"), os.path.join(_CSRC, "hccl.cpp"), os.path.join(_CSRC, "kernels.cpp"),
               os.path.join(root, "twin", "runtime.cpp"), os.path.join(root, "host", "tiling.cpp"),
               os.path.join(root, "host", "soc.cpp")]
    sources += sorted(glob.glob(os.path.join(root, "kernels", "batch_norm_*.cpp")))
    includes = [_CSRC] + [os.path.join(root, sub) for sub in ("include", os.path.join("twin", "include"), "host", "kernels")]
    return sources, includes


def build_name(sources, includes) -> str:
    """The extension's name: a digest of the sources' and headers' paths
    (relative to their folders, so a checkout and an installed package share
    a build) and contents, and of the torch and Python versions it is built
    for. Under one fixed name torch rebuilds whenever another checkout (or a
    header edit it does not track) loaded it last; digests keep one build per
    source state side by side."""
    digest = hashlib.sha256(f"torch {torch.__version__} python {sys.version_info[:2]} {_CFLAGS}".encode())
    headers = [h for d in includes for h in sorted(glob.glob(os.path.join(d, "*.h")))]
    for path in list(sources) + headers:
        digest.update(os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path)).encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    return f"npu_syncbn_emulated_device_{digest.hexdigest()[:12]}"


def build_directory(name: str) -> str:
    """torch's folder for extension ``name`` (under $TORCH_EXTENSIONS_DIR;
    torch creates it, empty, when asked)."""
    from torch.utils import cpp_extension

    return cpp_extension._get_build_directory(name, verbose=False)


def built_library(name: Optional[str] = None) -> Optional[str]:
    """The finished library of the current sources, or None when it is not
    built (or its build never finished)."""
    name = name or build_name(*_sources())
    folder = build_directory(name)
    lib = os.path.join(folder, f"{name}.so")
    return lib if os.path.exists(lib) and os.path.exists(os.path.join(folder, _COMPLETE)) else None


def _import_library(name: str, lib: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, lib)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(name: str, sources, includes) -> ModuleType:
    """Build under the lock, from scratch when an earlier build never
    finished (killed or failed): torch's own lock file in its build folder
    would otherwise make this wait forever for a builder that is gone."""
    from torch.utils import cpp_extension

    folder = build_directory(name)
    lock = os.path.join(os.path.dirname(folder), f"{name}.build.lock")
    what = "the emulated npu device"
    with build_lock.exclusive(lock, what):
        lib = built_library(name)
        if lib:  # another process built it while this one waited
            return _import_library(name, lib)
        if os.listdir(folder):  # torch's lookup makes the folder; anything in it is an earlier attempt
            print(f"npu_syncbn: an earlier build of {what} did not finish (killed or failed): building it again",
                  file=sys.stderr, flush=True)
            shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder, exist_ok=True)
        start = time.monotonic()
        print(f"npu_syncbn: building {what} (a torch C++ extension with our kernels in the twin, "
              f"{len(sources)} sources; a few minutes on 2 cores, once per source state) into {folder}",
              file=sys.stderr, flush=True)
        module = cpp_extension.load(name=name, sources=sources, extra_include_paths=includes,
                                    extra_cflags=[_CFLAGS], build_directory=folder, verbose=False)
        with open(os.path.join(folder, _COMPLETE), "w") as f:
            f.write(f"{time.time():.0f}\n")
        print(f"npu_syncbn: built {what} in {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
        return module


def extension() -> ModuleType:
    """The compiled device library: built once per source state under
    torch's extension directory ($TORCH_EXTENSIONS_DIR), then loaded from
    there directly."""
    global _ext
    with _lock:
        if _ext is None:
            sources, includes = _sources()
            name = build_name(sources, includes)
            lib = built_library(name)
            _ext = _import_library(name, lib) if lib else _build(name, sources, includes)
    return _ext


def index_of(device) -> int:
    """Device index of an int, ``"npu"``/``"npu:1"`` or ``torch.device``."""
    if isinstance(device, bool):
        raise TypeError(f"device must be an int, 'npu:<i>' or torch.device, got {device!r}")
    if isinstance(device, int):
        index = device
    else:
        d = torch.device(device)
        if d.type != "npu":
            raise ValueError(f"device must be an npu device, got {d}")
        index = d.index if d.index is not None else int(extension().current_device())
    count = int(extension().device_count())
    if not 0 <= index < count:
        raise ValueError(f"npu device index must be in 0..{count - 1}, got {index} ({ENV_DEVICES} sets the count)")
    return index


def register() -> None:
    """Make device type "npu" exist: backend name, hooks, ``torch.npu`` and the
    generated ``Tensor.npu()`` / ``Module.npu()`` / ``is_npu`` methods."""
    ext = extension()
    ext.init(device_count_from_environment())
    torch.utils.rename_privateuse1_backend("npu")
    from . import device_module

    torch._register_device_module("npu", device_module)
    torch.utils.generate_methods_for_privateuse1_backend(for_tensor=True, for_module=True, for_storage=True,
                                                         for_packed_sequence=False)
    # Backward of npu work on the calling thread, not on autograd's per-device
    # threads: a device thread still releasing Python objects when the
    # interpreter exits is killed mid-unwind (std::terminate, exit code 134;
    # pytorch#38228). Stream concurrency is not emulated anyway.
    torch._C._set_multithreading_enabled(False)


def cpu_alias(t: torch.Tensor) -> torch.Tensor:
    """A CPU tensor over an npu tensor's memory: no copy and not a host
    transfer (what a kernel launch does on the device is a device-side read)."""
    return extension().cpu_alias(t)


def adopt_cpu(t: torch.Tensor, device_index: int) -> torch.Tensor:
    """An npu tensor over a CPU tensor's memory (no copy): a kernel's output."""
    return extension().adopt_cpu(t, device_index)


def host_kernel(fn):
    """A CPU kernel as an npu kernel: ``fn`` runs on CPU views of the npu
    arguments' memory and its tensors come back as npu tensors (no copies, no
    host transfers). For the ops torch-npu runs as aclnn kernels on an NPU but
    torch has no CPU kernel of (``torch.batch_norm_stats`` and kin)."""

    def run(*args):
        index = next((a.device.index for a in args if isinstance(a, torch.Tensor) and a.device.type == "npu"), 0)
        out = fn(*[cpu_alias(a) if isinstance(a, torch.Tensor) and a.device.type == "npu" else a for a in args])

        def back(t):
            return adopt_cpu(t, index) if isinstance(t, torch.Tensor) and t.device.type == "cpu" else t

        return tuple(back(t) for t in out) if isinstance(out, (tuple, list)) else back(out)

    run.__name__ = f"{getattr(fn, '__name__', 'kernel')}_on_host"
    return run
