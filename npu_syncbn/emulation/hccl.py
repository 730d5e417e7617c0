"""Process-group backend ``"hccl"`` under emulation: collectives of "npu"
tensors carried over gloo.

``dist.init_process_group("hccl")``, ``dist.new_group(ranks)`` and
``npu_syncbn.init()`` / ``create_group`` work on it as on torch-npu's HCCL.
Each collective hands gloo CPU views of the npu tensors' memory (no copy, not
a host transfer: on an NPU, HCCL reads device memory itself), so results land
in the npu tensors; the returned work and its future give back the npu
tensors, as HCCL's would. The class derives from ``dist.ProcessGroup`` because
torch has no Python base class for a per-device backend; the methods below are
the ones torch's C++ and Python call on a process group.
"""
from __future__ import annotations

import datetime
from typing import List

import torch
import torch.distributed as dist
from torch._C import _distributed_c10d as c10d

from . import device

BACKEND = "hccl"


def _cpu(x):
    """npu tensors (in lists, to any depth) as CPU views of their memory.
    Other tensors are refused, as HCCL refuses them: a script that sends CPU
    tensors through "hccl" would fail on an NPU, so it fails here too."""
    if isinstance(x, torch.Tensor):
        if x.device.type != "npu":
            raise RuntimeError(f"hccl (emulated): collectives take npu tensors only, as HCCL does; got a tensor on "
                               f"{x.device} (move it with .npu() or use a gloo group for CPU tensors)")
        return device.cpu_alias(x)
    if isinstance(x, (list, tuple)):
        return [_cpu(e) for e in x]
    return x


class _NpuWork(c10d.Work):
    """gloo's work on the CPU views, answering with the npu tensors."""

    def __init__(self, inner: c10d.Work, results: List[torch.Tensor]):
        super().__init__()
        self._inner = inner
        self._results = results

    def wait(self, timeout: datetime.timedelta = datetime.timedelta(0)) -> bool:
        return self._inner.wait() if not timeout else self._inner.wait(timeout)

    def is_completed(self) -> bool:
        return self._inner.is_completed()

    def result(self) -> List[torch.Tensor]:
        self._inner.wait()
        return self._results

    def get_future(self) -> torch.futures.Future:
        results = self._results
        return self._inner.get_future().then(lambda _: results)


class EmulatedHccl(dist.ProcessGroup):
    """A process group of npu tensors over a gloo group of the same ranks."""

    def __init__(self, store, rank: int, size: int, timeout: datetime.timedelta):
        super().__init__(rank, size)
        self._gloo = c10d.ProcessGroupGloo(store, rank, size, timeout)
        self._group_name = ""

    def getBackendName(self) -> str:  # noqa: N802 (torch's name)
        return BACKEND

    # torch keeps a group's name in its per-device backends, and this group has
    # none (it is its own backend): without these, destroying a subgroup fails
    # with "ProcessGroup name not set".
    def _set_group_name(self, name: str) -> None:
        self._group_name = name

    @property
    def group_name(self) -> str:
        return self._group_name

    def _run(self, name: str, results, *args):
        inner = getattr(self._gloo, name)(*[_cpu(a) for a in args])
        return _NpuWork(inner, results)

    def allreduce(self, tensors, opts=None):
        return self._run("allreduce", tensors, tensors, opts or c10d.AllreduceOptions())

    def allreduce_coalesced(self, tensors, opts=None):
        return self._run("allreduce_coalesced", tensors, tensors, opts or c10d.AllreduceCoalescedOptions())

    def allgather(self, output_lists, inputs, opts=None):
        flat = [t for ts in output_lists for t in ts]
        return self._run("allgather", flat, output_lists, inputs, opts or c10d.AllgatherOptions())

    def all_gather_single(self, output, input, opts=None):
        # gloo splits a flat output into one chunk per rank; HCCL takes any shape
        return self._run("_allgather_base", [output], output.view(-1), input, opts or c10d.AllgatherOptions())

    _allgather_base = all_gather_single  # torch's older name

    def broadcast(self, tensors, opts=None):
        return self._run("broadcast", tensors, tensors, opts or c10d.BroadcastOptions())

    def reduce_scatter(self, outputs, input_lists, opts=None):
        return self._run("reduce_scatter", outputs, outputs, input_lists, opts or c10d.ReduceScatterOptions())

    def reduce_scatter_single(self, output, input, opts=None):
        return self._run("_reduce_scatter_base", [output], output, input.view(-1), opts or c10d.ReduceScatterOptions())

    _reduce_scatter_base = reduce_scatter_single

    def all_to_all_single(self, output, input, output_split_sizes, input_split_sizes, opts=None):
        return self._run("alltoall_base", [output], output, input, output_split_sizes, input_split_sizes,
                         opts or c10d.AllToAllOptions())

    alltoall_base = all_to_all_single

    def barrier(self, opts=None):
        return self._run("barrier", [], opts or c10d.BarrierOptions())

    def send(self, tensors, dst: int, tag: int = 0):
        return self._run("send", tensors, tensors, dst, tag)

    def recv(self, tensors, src: int, tag: int = 0):
        return self._run("recv", tensors, tensors, src, tag)


def _create(store, rank: int, size: int, timeout: datetime.timedelta) -> EmulatedHccl:
    return EmulatedHccl(store, rank, size, timeout)


def register() -> None:
    """Make ``"hccl"`` a process-group backend for device type "npu"."""
    if BACKEND.upper() not in dist.Backend._plugins:
        dist.Backend.register_backend(BACKEND, _create, devices=["npu"])
