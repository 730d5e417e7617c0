"""Rank-side scenarios of the shared-memory channel tests (npu_syncbn/shm.py).

Each function runs on every rank of a RankPool as ``fn(rank, world_size, *args)``
and makes a fresh group, so that the channel is set up under the transport
the scenario asks for ($NPU_SYNCBN_CPU_TRANSPORT is read when a group's
channel is made).
"""
from __future__ import annotations

import contextlib
import glob
import os
import time
from typing import Dict

import torch
import torch.distributed as dist

from npu_syncbn import comm, shm
from npu_syncbn.modules import SyncBatchNorm
from reliability_scenarios import short_group


@contextlib.contextmanager
def transport(name: str):
    os.environ[shm.ENV] = name
    try:
        yield
    finally:
        os.environ.pop(shm.ENV, None)


def _group(name: str, seconds: float = 30.0):
    with transport(name):
        group = short_group(seconds)
        channel = shm.channel_for(group, dist.get_world_size(group))
    return group, channel


def _payload(rank: int, dtype: torch.dtype, n: int = 37) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + rank)
    if dtype == torch.int64:
        return torch.randint(-1000, 1000, (n,), generator=g)
    return (torch.randn(n, generator=g, dtype=torch.float64) * 10 ** (rank + 1)).to(dtype)


def collectives_match_gloo(rank: int, world_size: int) -> Dict:
    """all_gather_rows and all_reduce_sum over shared memory against gloo's
    own collectives on the same group, for each dtype SyncBatchNorm sends."""
    group, channel = _group("shm")
    out = {"channel": channel is not None, "gather_equal": {}, "sums": {}, "gloo_sums": {}}
    for dtype in (torch.float32, torch.float64, torch.int64, torch.bfloat16):
        buf = _payload(rank, dtype)
        rows = comm.all_gather_rows(buf, group, world_size)
        want = [torch.empty_like(buf) for _ in range(world_size)]
        dist.all_gather(want, buf, group=group)
        out["gather_equal"][str(dtype)] = bool(torch.equal(rows, torch.stack(want)))
        summed = comm.all_reduce_sum(buf.clone(), group)
        out["sums"][str(dtype)] = summed
        reference = buf.clone()
        dist.all_reduce(reference, group=group)
        out["gloo_sums"][str(dtype)] = reference
    return out


def transport_in_use(rank: int, world_size: int, name: str) -> bool:
    """Whether a group made under $NPU_SYNCBN_CPU_TRANSPORT=name gets a channel."""
    return _group(name)[1] is not None


def sizes_differ(rank: int, world_size: int) -> Dict:
    """Rank 0 sends 5 values, the others 7: every rank must raise (none reads
    a short buffer), and the next collective on the group must work."""
    group, _ = _group("shm")
    try:
        comm.all_gather_rows(torch.ones(5 if rank == 0 else 7), group, world_size)
        msg = None
    except RuntimeError as exc:
        msg = str(exc)
    after = comm.all_reduce_sum(torch.ones(3), group)
    return {"msg": msg, "healthy": bool((after == world_size).all())}


def too_large_uses_gloo(rank: int, world_size: int) -> Dict:
    """A payload beyond one slot goes through gloo, correctly, on every rank."""
    group, channel = _group("shm")
    n = shm.SLOT_BYTES // 4 + 10
    exchanged_before = channel._k
    summed = comm.all_reduce_sum(torch.full((n,), float(rank + 1)), group)
    small = comm.all_reduce_sum(torch.ones(4), group)
    return {
        "correct": bool((summed == sum(range(1, world_size + 1))).all()),
        "small_ok": bool((small == world_size).all()),
        "exchanges": channel._k - exchanged_before,  # both announced their size through the channel
    }


def peer_missing_times_out(rank: int, world_size: int, timeout_s: float) -> Dict:
    """Rank 1 skips the second collective: rank 0 must raise within the group's timeout, naming rank 1."""
    group, _ = _group("shm", timeout_s)
    comm.all_reduce_sum(torch.ones(2), group)
    if rank == 1:
        return {"skipped": True}
    start = time.monotonic()
    try:
        comm.all_reduce_sum(torch.ones(2), group)
        msg = None
    except RuntimeError as exc:
        msg = str(exc)
    return {"msg": msg, "elapsed": time.monotonic() - start}


def nothing_left_in_dev_shm(rank: int, world_size: int) -> int:
    """Files of ours in /dev/shm once a channel is set up (rank 0 unlinks the
    name as soon as every rank mapped it)."""
    _group("shm")
    dist.barrier()
    return len(glob.glob(os.path.join(shm.SHM_DIR, "npu_syncbn-*")))


def syncbn_steps_use_shm(rank: int, world_size: int) -> Dict:
    """Collectives per SyncBatchNorm training step that go through the channel,
    and the step's result against BatchNorm on the global batch."""
    group, channel = _group("shm")
    bn = SyncBatchNorm(3, process_group=group)
    xs = [torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(r)) for r in range(world_size)]
    per_step = []
    for _ in range(2):
        before = channel._k
        x = xs[rank].clone().requires_grad_(True)
        y = bn(x)
        y.sum().backward()
        per_step.append(channel._k - before)
    ref = torch.nn.functional.batch_norm(torch.cat(xs).double(), None, None, training=True, eps=bn.eps)
    want = ref[4 * rank : 4 * rank + 4]
    return {"per_step": per_step, "close": bool(torch.allclose(y.double().detach(), want, atol=1e-5))}


def wait_time_counts_a_late_peer(rank: int, world_size: int) -> Dict:
    """cpu_fast.wait_seconds across one channel collective for which rank 1
    arrives 0.3 s late: what the other ranks waited, and rank 1's own wait."""
    from npu_syncbn.ops import cpu_fast

    group, channel = _group("shm")
    comm.all_reduce_sum(torch.ones(4), group)  # in step before the timed collective
    before = cpu_fast.wait_seconds()
    if rank == 1:
        time.sleep(0.3)
    comm.all_reduce_sum(torch.ones(4), group)
    return {"channel": channel is not None, "waited": cpu_fast.wait_seconds() - before}
