"""Process-group backend ``"hccl"`` under emulation: collectives of "npu"
tensors carried over gloo.

``dist.init_process_group("hccl")``, ``dist.new_group(ranks)`` and
``npu_syncbn.init()`` / ``create_group`` work on it as on torch-npu's HCCL:
the backend is a C++ ``c10d::Backend`` (``csrc/hccl.cpp``) that torch
registers for device type "npu" in each group, as torch-npu's is, so every
path torch takes to a backend (Python collectives, DDP, the functional
collectives of torch.compile) reaches it. It hands gloo CPU views of the npu
tensors' memory (no copy, not a host transfer) and refuses CPU tensors, as
HCCL does.
"""
from __future__ import annotations

import datetime

import torch.distributed as dist
from torch._C import _distributed_c10d as c10d

from . import device

BACKEND = "hccl"


def _create(store, rank: int, size: int, timeout: datetime.timedelta):
    gloo = c10d.ProcessGroupGloo(store, rank, size, timeout)
    return device.extension().hccl_backend(gloo, rank, size)


def register() -> None:
    """Make ``"hccl"`` a process-group backend for device type "npu"."""
    if BACKEND.upper() not in dist.Backend._plugins:
        dist.Backend.register_backend(BACKEND, _create, devices=["npu"])
