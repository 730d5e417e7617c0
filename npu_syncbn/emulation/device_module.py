"""``torch.npu`` under emulation: the device module torch looks up for device
type "npu" (``torch._register_device_module``), with the calls a training
script makes on torch-npu's ``torch.npu``: availability, device count and
selection, synchronization, seeding. Kernels run synchronously on the host, so
``synchronize`` has nothing to wait for."""
from __future__ import annotations

import contextlib

import torch

from . import device as _device


def is_available() -> bool:
    return True


def is_initialized() -> bool:
    return True


def init() -> None:
    """Nothing to initialize: the emulated device is ready once registered."""


def device_count() -> int:
    return int(_device.extension().device_count())


def current_device() -> int:
    return int(_device.extension().current_device())


def set_device(device) -> None:
    """Select the current device: an int, ``"npu:1"`` or ``torch.device("npu", 1)``."""
    index = _device.index_of(device)
    _device.extension().set_device(index)


@contextlib.contextmanager
def device(device):
    """Context manager that selects ``device`` and restores the previous one."""
    previous = current_device()
    set_device(device)
    try:
        yield
    finally:
        set_device(previous)


def synchronize(device=None) -> None:
    """Every emulated kernel has finished when it returns: nothing to wait for."""
    if device is not None:
        _device.index_of(device)  # still reject a bad index


def get_device_name(device=None) -> str:
    return "emulated Ascend NPU (host memory, npu_syncbn)"


def manual_seed(seed: int) -> None:
    """Random ops run as CPU kernels: seeding the CPU generator seeds them
    (directly: torch.manual_seed calls this for every device type)."""
    torch.default_generator.manual_seed(int(seed))


manual_seed_all = manual_seed


def get_rng_state(device=None) -> torch.Tensor:
    return torch.get_rng_state()


def set_rng_state(state: torch.Tensor, device=None) -> None:
    torch.set_rng_state(state)


def _is_in_bad_fork() -> bool:
    return False
