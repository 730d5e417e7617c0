"""The emulated Ascend device: torch's PrivateUse1 backend renamed "npu", over
host memory (the C++ pieces are in ``csrc/device.cpp``, built on first use with
torch's extension builder and cached). See ``npu_syncbn.emulation``."""
from __future__ import annotations

import glob
import hashlib
import os
import threading
from types import ModuleType
from typing import Optional

import torch

ENV_DEVICES = "NPU_SYNCBN_EMULATE_DEVICES"
DEFAULT_DEVICES = 8
_CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")

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
    """The extension's name: a digest of the source and header paths and
    contents. Under one fixed name torch rebuilds whenever another checkout
    (or a header edit it does not track) loaded it last; digests keep one
    build per source state side by side."""
    digest = hashlib.sha256()
    headers = [h for d in includes for h in sorted(glob.glob(os.path.join(d, "*.h")))]
    for path in list(sources) + headers:
        digest.update(path.encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    return f"npu_syncbn_emulated_device_{digest.hexdigest()[:12]}"


def extension() -> ModuleType:
    """The compiled device library (built once per source state, then cached
    under torch's extension directory, $TORCH_EXTENSIONS_DIR; about a minute
    on two cores)."""
    global _ext
    with _lock:
        if _ext is None:
            from torch.utils import cpp_extension

            sources, includes = _sources()
            _ext = cpp_extension.load(name=build_name(sources, includes), sources=sources,
                                      extra_include_paths=includes, extra_cflags=["-O2"], verbose=False)
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
