"""An emulated Ascend device, so that the NPU code path runs where no NPU is.

``NPU_SYNCBN_EMULATE_NPU=1`` (honoured by ``import npu_syncbn``, and only when
torch-npu is not importable) makes:

* device type ``"npu"``: torch's PrivateUse1 over host memory (``device.py``,
  ``csrc/device.cpp``), with ``torch.npu`` (``device_module.py``), ``.npu()``,
  ``.to("npu")`` and every aten op (CPU kernels on the same memory);
* the ``npu_syncbn`` ops on it (the five and the fused activation's two):
  our AscendC kernels through the CPU twin, launched as
  ``op_kernels/host/npu_ops.cpp`` launches them on an NPU
  (``npu_syncbn.ops.npu.ROUTE == "emulated"``);
* process-group backend ``"hccl"`` for npu tensors, carried over gloo
  (``hccl.py``, ``csrc/hccl.cpp``);
* :func:`host_transfers`, the count of device-to-host copies and host reads;
  :func:`device_copy_bytes`, bytes copied within the device; and
  :func:`take_kernel_log`, the GM traffic of each of our kernel launches.

What it does not model: the real compiler (bisheng), the real HCCL, stream
concurrency (kernels and collectives finish before the call returns; autograd
runs npu backward on the calling thread) and speed.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings

ENV_EMULATE = "NPU_SYNCBN_EMULATE_NPU"
_active = False


def requested() -> bool:
    """Whether ``NPU_SYNCBN_EMULATE_NPU`` asks for the emulated device."""
    return os.environ.get(ENV_EMULATE, "").strip().lower() in ("1", "true", "yes", "on")


def active() -> bool:
    """Whether device type "npu" is the emulated device in this process."""
    return _active


def _torch_npu_importable() -> bool:
    # Importing torch_npu here would register its backend even when it then
    # fails for want of CANN, so a broken install is probed in a subprocess.
    if importlib.util.find_spec("torch_npu") is None:
        return False
    probe = subprocess.run([sys.executable, "-c", "import torch_npu"], capture_output=True, timeout=120)
    return probe.returncode == 0


def activate_from_environment() -> bool:
    """Register the emulated device when asked for and no real one is there."""
    global _active
    if _active or not requested():
        return _active
    if _torch_npu_importable():
        warnings.warn(f"{ENV_EMULATE} is set but torch_npu is importable: the real NPU is used, not the emulation",
                      RuntimeWarning, stacklevel=2)
        return False
    from . import device, hccl

    device.register()
    hccl.register()
    _active = True
    return True


def _require_active() -> None:
    if not _active:
        raise RuntimeError(f"the emulated npu device is not active: set {ENV_EMULATE}=1 before importing npu_syncbn")


def device_copy_bytes() -> int:
    """Bytes copied within the emulated device since import (see ``transfers.py``)."""
    _require_active()
    from .transfers import device_copy_bytes as count

    return count()


def take_kernel_log():
    """Our kernels launched since the last call, with the GM bytes each moved
    per buffer (see ``transfers.py``)."""
    _require_active()
    from .transfers import take_kernel_log as take

    return take()


def host_transfers() -> int:
    """Device-to-host copies and host reads of device data since import (see
    ``transfers.py``). Raises RuntimeError when the emulation is not active."""
    _require_active()
    from .transfers import host_transfers as count

    return count()
