"""Rank-side scenarios of the fused activation tests: SyncBatchNorm(activation=...)
with forward(x, residual) against float64 torch BatchNorm (+ residual) (+ ReLU)
on the global batch, fused CPU step against the op path."""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F

from cpu_step_scenarios import fused_calls
from npu_syncbn.modules import SyncBatchNorm
from shm_scenarios import _group

WEIGHT = (0.5, 2.0)
BIAS = (-1.0, 1.0)


def _inputs(rank: int, cfg: Dict, step: int) -> List[torch.Tensor]:
    """(x, residual, dy) of ``rank`` at ``step``, in cfg's dtype and layout."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    shape = cfg["shape"]
    out = [torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 1.5, torch.randn(shape, generator=g, dtype=torch.float64),
           torch.randn(shape, generator=g, dtype=torch.float64)]
    dtype = getattr(torch, cfg.get("dtype", "float32"))
    out = [t.to(dtype) for t in out]
    if cfg.get("channels_last"):
        out = [t.contiguous(memory_format=torch.channels_last) for t in out]
    if cfg.get("residual_layout") == "channels_last":
        out[1] = out[1].contiguous(memory_format=torch.channels_last)
    return out


def _train(rank: int, cfg: Dict, group, steps: int) -> Dict:
    c = cfg["shape"][1]
    bn = SyncBatchNorm(c, process_group=group, activation=cfg.get("activation"))
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(*WEIGHT, c))
        bn.bias.copy_(torch.linspace(*BIAS, c))
    out = {"y": [], "dx": [], "dr": [], "dw": [], "db": []}
    for step in range(steps):
        x, r, dy = _inputs(rank, cfg, step)
        x.requires_grad_(True)
        r = r.requires_grad_(True) if cfg.get("residual", True) else None
        y = bn(x, r) if r is not None else bn(x)
        y.backward(dy)
        out["y"].append(y.detach())
        out["dx"].append(x.grad)
        out["dr"].append(r.grad if r is not None else torch.zeros(0))
        out["dw"].append(bn.weight.grad.clone())
        out["db"].append(bn.bias.grad.clone())
        bn.weight.grad = bn.bias.grad = None
    out["running"] = torch.cat([bn.running_mean, bn.running_var])
    return out


def _reference(rank: int, world_size: int, cfg: Dict, step: int) -> Dict:
    """float64 BatchNorm of the global batch, + residual, then ReLU: this rank's
    share of y, dx, dr and the global dw, db."""
    c, n = cfg["shape"][1], cfg["shape"][0]
    xs, rs, dys = zip(*(_inputs(r, cfg, step) for r in range(world_size)))
    x = torch.cat(xs).double().requires_grad_(True)
    r = torch.cat(rs).double().requires_grad_(True)
    w = torch.linspace(*WEIGHT, c, dtype=torch.float64).requires_grad_(True)
    b = torch.linspace(*BIAS, c, dtype=torch.float64).requires_grad_(True)
    y = F.batch_norm(x, None, None, w, b, training=True, eps=1e-5)
    if cfg.get("residual", True):
        y = y + r
    if cfg.get("activation") == "relu":
        y = torch.relu(y)
    y.backward(torch.cat(dys).double())
    mine = slice(n * rank, n * (rank + 1))
    dr = r.grad[mine] if r.grad is not None else torch.zeros(0)
    return {"y": y.detach()[mine], "dx": x.grad[mine], "dr": dr, "dw": w.grad, "db": b.grad}


def fused_against_op_path_and_reference(rank: int, world_size: int, cfg: Dict) -> Dict:
    """Three steps fused, three on the op path (same inputs), the float64
    reference, the gradients of weight and bias summed over the ranks."""
    group, _ = _group("shm")
    steps = 3
    with fused_calls() as fused:
        first = _train(rank, cfg, group, steps)
    with fused_calls(enabled=False):
        second = _train(rank, cfg, group, steps)
    for run in (first, second):
        for key in ("dw", "db"):
            for t in run[key]:
                torch.distributed.all_reduce(t, group=group)
    return {"fused": dict(fused), "first": first, "second": second,
            "reference": [_reference(rank, world_size, cfg, s) for s in range(steps)]}


def saved_bytes(rank: int, world_size: int, shape, fused: bool) -> Dict:
    """Bytes of unique storages autograd keeps for backward: relu(bn(x) + r)
    as one SyncBatchNorm(activation="relu"), or SyncBatchNorm, +, ReLU."""
    group, _ = _group("shm")
    c = shape[1]
    bn = SyncBatchNorm(c, process_group=group, activation="relu" if fused else None)
    x = torch.randn(shape, requires_grad=True)
    r = torch.randn(shape, requires_grad=True)
    sizes = {}

    def pack(t):
        st = t.untyped_storage()
        sizes[st.data_ptr()] = st.nbytes()
        return t

    bn(x, r).sum().backward()  # first call: strict check; the measured one is a later call
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = bn(x, r) if fused else torch.relu(bn(x) + r)
    y.backward(torch.ones_like(y))
    return {"bytes": sum(sizes.values()), "activation": x.numel() * x.element_size()}
