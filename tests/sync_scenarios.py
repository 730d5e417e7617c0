"""Rank-side scenario of the multi-rank equivalence tests.

Every rank builds the same global batch, keeps its shard, runs
npu_syncbn.SyncBatchNorm for a few training steps and compares against
torch.nn.BatchNorm{1,2,3}d in float64 on the concatenated global batch of its
group: outputs, input gradients, weight/bias gradients summed over the group,
running statistics. Returns the worst relative errors seen. On the emulated
npu device (``dist_utils.rank_device``) the module and its input live on
"npu" and CPU copies are compared with the same CPU references.
"""
from __future__ import annotations

import os
from typing import Dict

import torch
import torch.distributed as dist

import npu_syncbn
from dist_utils import rank_device

DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
REFERENCE_BN = {0: torch.nn.BatchNorm1d, 1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(1, max |b|): a relative error that is safe near zero."""
    if b.numel() == 0:
        return 0.0
    a, b = a.detach().cpu().double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1.0))


def compare_with_local_bn(rank: int, world_size: int, cfg: Dict) -> Dict[str, float]:
    """``cfg["transport"]``: $NPU_SYNCBN_CPU_TRANSPORT while the run's groups
    are made (it applies to groups from ``cfg["groups"]``; the default group
    keeps what it got at its first use)."""
    transport = cfg.get("transport")
    if transport:
        os.environ["NPU_SYNCBN_CPU_TRANSPORT"] = transport
    try:
        return _compare_with_local_bn(rank, world_size, cfg)
    finally:
        os.environ.pop("NPU_SYNCBN_CPU_TRANSPORT", None)


def _compare_with_local_bn(rank: int, world_size: int, cfg: Dict) -> Dict[str, float]:
    C, inner, counts = cfg["C"], tuple(cfg.get("inner", ())), cfg["counts"]
    dtype = DTYPES[cfg.get("dtype", "float32")]
    eps, momentum, affine = cfg.get("eps", 1e-5), cfg.get("momentum", 0.1), cfg.get("affine", True)
    groups = cfg.get("groups")
    members = list(range(world_size))
    process_group = None
    if groups:
        members = next(g for g in groups if rank in g)
        process_group = "g" + "_".join(map(str, members))
        npu_syncbn.create_group(process_group, members)
    try:
        idx = members.index(rank)
        assert len(counts) == len(members), "one count per group member"

        mod = npu_syncbn.SyncBatchNorm(
            C, eps=eps, momentum=momentum, affine=affine, process_group=process_group,
            sync_mode=cfg.get("sync_mode", "auto"),
        )
        if dtype == torch.float64:
            mod.double()  # half types run with float32 parameters; float64 needs float64 ones
        ref = REFERENCE_BN[len(inner)](C, eps=eps, momentum=momentum, affine=affine).double()
        if affine:
            g = torch.Generator().manual_seed(1)
            with torch.no_grad():
                w, b = torch.randn(C, generator=g), torch.randn(C, generator=g)
                mod.weight.copy_(w), mod.bias.copy_(b)
                ref.weight.copy_(w), ref.bias.copy_(b)

        dev = rank_device()
        mod.to(dev)
        errs = {"output": 0.0, "grad_input": 0.0, "grad_weight": 0.0, "grad_bias": 0.0}
        start = sum(counts[:idx])
        for step in range(cfg.get("steps", 3)):
            g = torch.Generator().manual_seed(100 + step)
            shape = (sum(counts), C) + inner
            X = (torch.randn(shape, generator=g) * cfg.get("std", 2.0) + cfg.get("mean", 0.5)).to(dtype)
            G = torch.randn(shape, generator=g)

            x = X[start : start + counts[idx]].clone().to(dev)
            if cfg.get("channels_last"):
                x = x.to(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
            x.requires_grad_(True)
            y = mod(x)
            if cfg.get("channels_last") and x.numel():
                fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
                assert y.is_contiguous(memory_format=fmt), "channels_last input must give channels_last output"
            assert y.dtype == dtype and y.shape == x.shape
            assert y.device == x.device
            (y.double() * G[start : start + counts[idx]].double().to(dev)).sum().backward()

            Xr = X.double().requires_grad_(True)
            yr = ref(Xr)
            (yr * G.double()).sum().backward()

            sl = slice(start, start + counts[idx])
            errs["output"] = max(errs["output"], _rel(y.detach(), yr.detach()[sl]))
            errs["grad_input"] = max(errs["grad_input"], _rel(x.grad, Xr.grad[sl]))
            if affine:
                pg = npu_syncbn.comm.resolve_group(process_group)
                for name, p, rp in (("grad_weight", mod.weight, ref.weight), ("grad_bias", mod.bias, ref.bias)):
                    summed = p.grad.detach().clone()
                    dist.all_reduce(summed, group=pg)
                    errs[name] = max(errs[name], _rel(summed, rp.grad))
                    p.grad = None
                    rp.grad = None

        errs["running_mean"] = _rel(mod.running_mean, ref.running_mean)
        errs["running_var"] = _rel(mod.running_var, ref.running_var)
        errs["num_batches_tracked_equal"] = float(int(mod.num_batches_tracked) == int(ref.num_batches_tracked))
        return errs
    finally:
        if groups:
            npu_syncbn.destroy_group(process_group)
