"""Rank-side scenarios of the fused CPU step tests (npu_syncbn/cpu_step.py).

Each runs on every rank as ``fn(rank, world_size, *args)`` on a fresh group
with the shared-memory channel forced, so that the fused step can run.
"""
from __future__ import annotations

import contextlib
import time
from typing import Dict, List

import torch

from npu_syncbn import cpu_step
from npu_syncbn.modules import SyncBatchNorm
from shm_scenarios import _group


@contextlib.contextmanager
def fused_calls(enabled: bool = True):
    """Counts the steps cpu_step took (returned a result or raised: it raises
    only once it took the step) when ``enabled``, else makes every step take
    the op path; yields {"forward": n, "backward": n}."""
    counts = {"forward": 0, "backward": 0}
    saved = {name: getattr(cpu_step, name) for name in counts}

    def wrap(name):
        def run(*args, **kwargs):
            if not enabled:
                return None
            try:
                result = saved[name](*args, **kwargs)
            except BaseException:
                counts[name] += 1
                raise
            counts[name] += result is not None
            return result

        return run

    for name in counts:
        setattr(cpu_step, name, wrap(name))
    try:
        yield counts
    finally:
        for name, fn in saved.items():
            setattr(cpu_step, name, fn)


def _inputs(rank: int, cfg: Dict, step: int) -> List[torch.Tensor]:
    """(x, grad) of ``rank`` at ``step``: deterministic, different per rank and step."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    shape = cfg["shape"]
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 1.5
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    dtype = getattr(torch, cfg.get("dtype", "float32"))
    x, dy = x.to(dtype), dy.to(dtype)
    if cfg.get("channels_last"):
        x, dy = x.contiguous(memory_format=torch.channels_last), dy.contiguous(memory_format=torch.channels_last)
    return [x, dy]


def _train(rank: int, cfg: Dict, group, steps: int) -> Dict:
    """``steps`` training steps of one layer; every result of each step."""
    torch.manual_seed(7)
    c = cfg["shape"][1]
    bn = SyncBatchNorm(c, affine=cfg.get("affine", True), track_running_stats=cfg.get("track", True),
                       process_group=group)
    if bn.affine:
        with torch.no_grad():
            bn.weight.copy_(torch.linspace(0.5, 2.0, c))
            bn.bias.copy_(torch.linspace(-1.0, 1.0, c))
    out = {"y": [], "dx": [], "dw": [], "db": [], "running": []}
    for step in range(steps):
        x, dy = _inputs(rank, cfg, step)
        x.requires_grad_(True)
        y = bn(x)
        y.backward(dy)
        out["y"].append(y.detach())
        out["dx"].append(x.grad)
        if bn.affine:
            out["dw"].append(bn.weight.grad.clone())
            out["db"].append(bn.bias.grad.clone())
            bn.weight.grad = bn.bias.grad = None
        if bn.running_mean is not None:
            out["running"].append(torch.cat([bn.running_mean, bn.running_var]).clone())
    return out


def fused_against_op_path(rank: int, world_size: int, cfg: Dict, op_path_ranks: List[int]) -> Dict:
    """Three steps fused on every rank, then again with the ranks in
    ``op_path_ranks`` on the op path: the results of both runs, how many
    steps ran fused, and the float64 reference of the global batch."""
    group, _ = _group("shm")
    steps = 3
    with fused_calls() as fused:
        first = _train(rank, cfg, group, steps)
    with fused_calls(enabled=rank not in op_path_ranks):
        second = _train(rank, cfg, group, steps)
    # Reference: BatchNorm of the global batch in float64, output and input gradient.
    c, n = cfg["shape"][1], cfg["shape"][0]
    affine = cfg.get("affine", True)
    weight, bias = (torch.linspace(0.5, 2.0, c, dtype=torch.float64), torch.linspace(-1.0, 1.0, c, dtype=torch.float64))
    reference = []
    for step in range(steps):
        xs, dys = zip(*(_inputs(r, cfg, step) for r in range(world_size)))
        x = torch.cat(xs).double().requires_grad_(True)
        y = torch.nn.functional.batch_norm(x, None, None, weight if affine else None, bias if affine else None,
                                           training=True, eps=1e-5)
        y.backward(torch.cat(dys).double())
        mine = slice(n * rank, n * (rank + 1))
        reference.append((y.detach()[mine], x.grad[mine]))
    return {"fused": dict(fused), "first": first, "second": second, "reference": reference}


def fingerprint_mismatch_then_in_step(rank: int, world_size: int) -> Dict:
    """Two layers of the same C; at step 2 rank 1 calls them in the other
    order (the buffer-level check of the fused step must catch it on every
    rank), then step 3 is in order again and must work."""
    group, _ = _group("shm")
    a = SyncBatchNorm(4, process_group=group, layer_name="a")
    b = SyncBatchNorm(4, process_group=group, layer_name="b")
    x = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(rank))
    a(x), b(x)  # first calls: strict check, op path
    order = (b, a) if rank == 1 else (a, b)
    with fused_calls() as fused:
        try:
            for layer in order:
                layer(x)
            msg = None
        except RuntimeError as exc:
            msg = str(exc)
        y = b(a(x))
    return {"msg": msg, "fused": dict(fused), "finite": bool(torch.isfinite(y).all())}


def peer_skips_backward(rank: int, world_size: int, timeout_s: float) -> Dict:
    """Rank 1 runs the forward but never the backward: rank 0's fused
    backward must raise within the group's timeout, naming the collective."""
    group, _ = _group("shm", timeout_s)
    bn = SyncBatchNorm(4, process_group=group)
    x = torch.randn(3, 4, 5, requires_grad=True)
    dy = torch.randn(3, 4, 5)  # contiguous, as the fused backward takes (y.sum() would give an expanded one)
    bn(x).backward(dy)  # first step: strict check, fused backward
    y = bn(x)
    if rank == 1:
        return {"skipped": True}
    start = time.monotonic()
    with fused_calls() as fused:
        try:
            y.backward(dy)
            msg = None
        except RuntimeError as exc:
            msg = str(exc)
    return {"msg": msg, "elapsed": time.monotonic() - start, "fused": dict(fused)}
