"""Shared-memory collectives for the ranks of one group on one host (CPU).

Why not gloo alone: a small gloo collective hands the buffer between four
threads (caller, gloo worker, transport loop, and back on the peer). Between
two compute phases of a training step those threads sleep, and waking them
cost 0.3-1 ms per collective on the 2-core VM this was measured on, more than
a whole local BatchNorm step of a 256x1024 layer. Here every rank copies its
payload into its own slot of one shared mapping, publishes a sequence number
(release store) and spins on the others' (acquire loads, C library): no
thread hand-offs, a few microseconds per collective.

Used by :mod:`npu_syncbn.comm` for CPU tensors in eager mode when
$NPU_SYNCBN_CPU_TRANSPORT is ``auto`` (default: when this host has a core
for each of the job's processes on it, since waiting ranks spin) or ``shm``,
and the group's ranks share /dev/shm; ``gloo`` turns it off. Everything else (torch.compile graphs,
payloads beyond :data:`SLOT_BYTES`, other backends) goes through gloo.

Protocol of collective k (k = 1, 2, ...) on a channel of W ranks (the
rendezvous is nsb_exchange in op_kernels/cpu/shm_sync.cpp): rank r
writes its payload into slot k % 2 of its area, then (nbytes, dtype) into
that slot's header, then publishes seq[r] = k; it reads the peers' slots once
every seq >= k. A rank can reuse a slot (collective k + 2) only after every
rank published k + 1, i.e. finished reading collective k: two slots suffice.
All ranks reduce in rank order 0..W-1, so every rank gets the same bits.
Ranks whose payload sizes or dtypes differ all raise (no rank reads a short
buffer), and the channel stays in step for the next collective.
"""
from __future__ import annotations

import mmap
import os
import uuid
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .timeouts import default_timeout

ENV = "NPU_SYNCBN_CPU_TRANSPORT"  # auto | shm | gloo
MODES = ("auto", "shm", "gloo")
SLOT_BYTES = 128 << 10  # payload per rank and slot; larger payloads go through gloo
RANK_STRIDE = 2 * SLOT_BYTES  # bytes from one rank's slot to the next rank's same slot
ARRIVED, MISMATCH = -1, -2  # nsb_exchange outcomes besides a missing rank (op_kernels/cpu/nsb_api.h)
SHM_DIR = "/dev/shm"
_HEADER = 64  # per rank: seq, then (nbytes, dtype code) of slots 0 and 1; one cache line
DTYPE_CODES = {torch.float32: 1, torch.float64: 2, torch.int64: 3, torch.float16: 4, torch.bfloat16: 5, torch.int32: 6}

# id(pg) -> (pg, channel or None); holding pg keeps its id from being reused.
_CHANNELS: Dict[int, Tuple[dist.ProcessGroup, Optional["ShmChannel"]]] = {}


class ChannelError(RuntimeError):
    """A collective over the channel failed; every rank of it raises."""


class ShmTimeout(ChannelError):
    """A rank did not reach the collective within the group's timeout."""


def mode() -> str:
    setting = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if setting not in MODES:
        raise ValueError(f"{ENV} must be one of {', '.join(MODES)}, got {setting!r}")
    return setting


def local_processes(world_size: int) -> int:
    """Processes of this job on this host: $LOCAL_WORLD_SIZE (torchrun,
    npu-syncbn-run), else every rank of the default group, else ``world_size``."""
    env = os.environ.get("LOCAL_WORLD_SIZE", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return world_size


def wanted(world_size: int) -> bool:
    """Whether this process asks for a channel on a group of ``world_size``
    ranks: ``auto`` when this host has a core for each of the job's processes
    on it (waiting ranks spin; with more processes than cores they would
    take the cores of ranks still computing)."""
    setting = mode()
    if setting == "gloo" or world_size < 2:
        return False
    return setting == "shm" or max(world_size, local_processes(world_size)) <= (os.cpu_count() or 1)


def _library():
    from .ops import cpu_fast

    return cpu_fast.library_any()  # its loader declared nsb_seq_publish/nsb_seq_wait or failed


def _timeout_s(pg: dist.ProcessGroup) -> float:
    try:
        return pg._get_backend(torch.device("cpu")).options._timeout.total_seconds()  # private: no public getter
    except Exception:
        return default_timeout().total_seconds()


class ShmChannel:
    """One mapping shared by the W ranks of a group: W headers, then W areas of two slots."""

    def __init__(self, mapping: mmap.mmap, rank: int, world_size: int, timeout_s: float, lib) -> None:
        self._map = mapping  # kept open: the tensors below view it
        self.rank, self.world_size, self.timeout_s, self._lib = rank, world_size, timeout_s, lib
        raw = torch.frombuffer(mapping, dtype=torch.uint8)
        # The rendezvous reads and writes the headers in C (nsb_exchange); these
        # numpy views serve the error messages and the fused step's fingerprint rows.
        self._heads = np.frombuffer(mapping, dtype=np.int64, count=world_size * _HEADER // 8).reshape(world_size, -1)
        self._slots = raw[_HEADER * world_size :].view(world_size, 2, SLOT_BYTES)
        self._slots_address = self._slots.data_ptr()
        self._floats = np.frombuffer(mapping, dtype=np.float32, offset=_HEADER * world_size).reshape(world_size, 2, -1)
        self._seq_ptr = self._heads.ctypes.data
        self._k = 0
        self.broken: Optional[str] = None

    @staticmethod
    def size(world_size: int) -> int:
        return world_size * (_HEADER + 2 * SLOT_BYTES)

    def next_collective(self) -> int:
        """Sequence number k of the next collective; this rank writes its
        payload into slot k % 2 (:meth:`slot_address`), which is safe from the
        moment the previous collective returned, then calls :meth:`publish_and_wait`
        (or hands k to C and reports the outcome with :meth:`settle`)."""
        if self.broken:
            raise ChannelError(f"shared-memory channel unusable after an earlier failure: {self.broken}")
        return self._k + 1

    def slot_address(self, rank: int, slot: int) -> int:
        """Address of ``rank``'s payload in ``slot``; rank r + 1's follows at
        + :data:`RANK_STRIDE` bytes."""
        return self._slots_address + rank * RANK_STRIDE + slot * SLOT_BYTES

    def geometry(self) -> Tuple[int, int, int, int]:
        """(headers address, header stride in int64, slots address, slot bytes):
        where C finds the channel (with rank, world_size and timeout_s)."""
        return self._seq_ptr, _HEADER // 8, self._slots_address, SLOT_BYTES

    def publish_and_wait(self, nbytes: int, code: int) -> int:
        """Publish this rank's payload (``nbytes`` of dtype ``code``, already in
        slot :meth:`next_collective` % 2) and wait for every rank's; returns
        the slot to read. Raises as :meth:`settle`."""
        k = self.next_collective()
        self.settle(k, self._lib.nsb_exchange(self._seq_ptr, _HEADER // 8, self.rank, self.world_size, k, nbytes, code,
                                              self.timeout_s))
        return k % 2

    def settle(self, k: int, outcome: int) -> None:
        """Record collective ``k`` as done with nsb_exchange's ``outcome``: ARRIVED,
        MISMATCH (raises ChannelError on every rank; the channel stays in
        step), or the rank that did not arrive within the timeout (raises
        ShmTimeout; the channel is unusable from then on)."""
        self._k = k
        if outcome == ARRIVED:
            return
        if outcome >= 0:
            self.broken = f"rank {outcome} of the group did not arrive within {self.timeout_s:.0f} s"
            raise ShmTimeout(
                f"shared-memory collective: {self.broken} (a rank died, hangs, or skipped a collective; "
                "the wait is bounded by the process group timeout, $NPU_SYNCBN_TIMEOUT)"
            )
        slot = k % 2
        sizes, codes = self._heads[:, 1 + 2 * slot].tolist(), self._heads[:, 2 + 2 * slot].tolist()
        names = {v: str(d).replace("torch.", "") for d, v in DTYPE_CODES.items()}
        parts = ", ".join(f"rank {r}: {n} bytes {names.get(c, c)}" for r, (n, c) in enumerate(zip(sizes, codes)))
        raise ChannelError(
            f"ranks sent different buffer sizes or dtypes to one collective ({parts}): a different channel "
            "count or dtype at the same call, or collectives called in different orders"
        )

    def floats(self, slot: int) -> np.ndarray:
        """(W, SLOT_BYTES / 4) float32 numpy view of every rank's ``slot``."""
        return self._floats[:, slot]

    def _exchange(self, buf: Tensor) -> Optional[int]:
        """Publish ``buf``, wait for every rank; returns the slot to read, or
        None when every rank's payload is too large for a slot (use gloo)."""
        code = DTYPE_CODES.get(buf.dtype)
        if code is None:
            return None  # decided on dtype alone: the same on every rank of a well-formed call
        nbytes = buf.numel() * buf.element_size()
        if nbytes <= SLOT_BYTES:
            slot = self.next_collective() % 2
            self._slots[self.rank, slot, :nbytes].view(buf.dtype).copy_(buf.reshape(-1))
        slot = self.publish_and_wait(nbytes, code)
        return slot if nbytes <= SLOT_BYTES else None

    def _peer(self, r: int, slot: int, like: Tensor) -> Tensor:
        nbytes = like.numel() * like.element_size()
        return self._slots[r, slot, :nbytes].view(like.dtype)

    def all_gather_rows(self, buf: Tensor) -> Optional[Tensor]:
        """(W, len(buf)) rows of every rank, or None (payload too large: use gloo)."""
        slot = self._exchange(buf)
        if slot is None:
            return None
        return torch.stack([self._peer(r, slot, buf) for r in range(self.world_size)])

    def all_reduce_sum(self, buf: Tensor) -> Optional[Tensor]:
        """Sum over ranks in rank order into ``buf`` (in place), or None (use gloo)."""
        slot = self._exchange(buf)
        if slot is None:
            return None
        out = buf.view(-1) if buf.is_contiguous() else torch.empty(buf.numel(), dtype=buf.dtype)
        # ((p0 + p1) + p2) + ...: the same order, hence the same bits, on every rank.
        torch.add(self._peer(0, slot, buf), self._peer(1, slot, buf), out=out)
        for r in range(2, self.world_size):
            out += self._peer(r, slot, buf)
        if not buf.is_contiguous():
            buf.copy_(out.view(buf.shape))
        return buf


def channel_for(pg: dist.ProcessGroup, world_size: int) -> Optional[ShmChannel]:
    """The group's channel, set up on first use (a collective over ``pg``: every
    rank of it calls this at the same collective, as SyncBatchNorm's ranks do),
    or None when the group uses gloo alone."""
    entry = _CHANNELS.get(id(pg))
    if entry is not None:
        return entry[1]
    channel = _create(pg, world_size) if wanted(world_size) else None
    _CHANNELS[id(pg)] = (pg, channel)
    return channel


def forget(pg) -> None:
    """Drop a destroyed group's channel (its mapping closes with the last view)."""
    _CHANNELS.pop(id(pg), None)


def _create(pg: dist.ProcessGroup, world_size: int) -> Optional[ShmChannel]:
    lib = _library()
    rank = dist.get_rank(pg)
    ok = lib is not None and os.path.isdir(SHM_DIR) and dist.get_backend(pg) == "gloo"
    # Every rank takes part in each step below, whatever it found, so that the
    # decision is common: one rank without the library means gloo for all.
    agreed = torch.tensor([int(ok)], dtype=torch.int64)
    dist.all_reduce(agreed, op=dist.ReduceOp.MIN, group=pg)
    if not int(agreed):
        return None
    size = ShmChannel.size(world_size)
    name = [None]
    fd = -1
    if rank == 0:
        path = os.path.join(SHM_DIR, f"npu_syncbn-{uuid.uuid4().hex}")
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            os.ftruncate(fd, size)
            name = [path]
        except OSError:
            if fd >= 0:
                os.close(fd)
                os.unlink(path)
            fd = -1
    dist.broadcast_object_list(name, src=dist.get_global_rank(pg, 0), group=pg)
    mapping = None
    if name[0] is not None:
        try:
            if rank != 0:
                fd = os.open(name[0], os.O_RDWR)
            mapping = mmap.mmap(fd, size)
        except OSError:  # another host, or /dev/shm not shared with rank 0
            mapping = None
        finally:
            if fd >= 0:
                os.close(fd)
    attached = torch.tensor([int(mapping is not None)], dtype=torch.int64)
    dist.all_reduce(attached, op=dist.ReduceOp.MIN, group=pg)
    if rank == 0 and name[0] is not None:
        os.unlink(name[0])  # every rank has it mapped (or gave up): nothing left behind in /dev/shm
    if not int(attached):
        if mapping is not None:
            mapping.close()
        return None
    return ShmChannel(mapping, rank, world_size, _timeout_s(pg), lib)
