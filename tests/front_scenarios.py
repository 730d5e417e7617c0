"""Rank-side scenarios of the MindSpore-front tests (tests/test_mint.py,
tests/test_mindspore_front.py), run with ``ranks(n).run(fn, *args)``.

Each rank builds the same global batch, keeps its shard, runs a front for a
few training steps and compares with torch.nn.BatchNorm2d in float64 on the
concatenated batch of its group. Returns the worst relative errors. On the
emulated npu device the front and its input live on "npu" (CPU copies are
compared).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.distributed as dist

import npu_syncbn
from npu_syncbn import comm
from npu_syncbn import mindspore as ms_front
from npu_syncbn import mint
from dist_utils import rank_device


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().cpu().double(), b.detach().double()
    if b.numel() == 0:
        return 0.0
    return float((a - b).abs().max() / b.abs().max().clamp_min(1.0))


def _compare(mod, members: List[int], rank: int, counts: List[int], C: int, torch_momentum: float,
             steps: int = 3, inner=(3, 2)) -> Dict[str, float]:
    """Train ``mod`` (already in training mode, float64) on this rank's shard;
    compare with BatchNorm2d on the group's concatenated batch."""
    idx = members.index(rank)
    ref = torch.nn.BatchNorm2d(C, eps=mod.eps, momentum=torch_momentum).double() if len(inner) == 2 else \
        torch.nn.BatchNorm1d(C, eps=mod.eps, momentum=torch_momentum).double()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        w, b = torch.randn(C, generator=g, dtype=torch.float64), torch.randn(C, generator=g, dtype=torch.float64)
        mod.weight.copy_(w), mod.bias.copy_(b)
        ref.weight.copy_(w), ref.bias.copy_(b)
    errs = dict.fromkeys(["output", "grad_input", "grad_weight", "grad_bias"], 0.0)
    start = sum(counts[:idx])
    sl = slice(start, start + counts[idx])
    pg = comm.resolve_group(mod.process_group) if len(members) > 1 else None  # a group of one sums nothing
    dev = rank_device()
    mod.to(dev)
    for step in range(steps):
        g = torch.Generator().manual_seed(100 + step)
        shape = (sum(counts), C) + tuple(inner)
        X = torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 1.5
        G = torch.randn(shape, generator=g, dtype=torch.float64)
        x = X[sl].clone().to(dev).requires_grad_(True)
        y = mod(x)
        assert y.device == x.device
        (y * G[sl].to(dev)).sum().backward()
        Xr = X.clone().requires_grad_(True)
        yr = ref(Xr)
        (yr * G).sum().backward()
        errs["output"] = max(errs["output"], _rel(y, yr[sl]))
        errs["grad_input"] = max(errs["grad_input"], _rel(x.grad, Xr.grad[sl]))
        for name, p, rp in (("grad_weight", mod.weight, ref.weight), ("grad_bias", mod.bias, ref.bias)):
            summed = p.grad.detach().clone()
            if pg is not None:
                dist.all_reduce(summed, group=pg)
            errs[name] = max(errs[name], _rel(summed, rp.grad))
            p.grad, rp.grad = None, None
    errs["running_mean"] = _rel(mod.running_mean, ref.running_mean)
    errs["running_var"] = _rel(mod.running_var, ref.running_var)
    errs["num_batches_tracked_equal"] = float(int(mod.num_batches_tracked) == int(ref.num_batches_tracked))
    return errs


# ----------------------------------------------------------------------------- mint front


def mint_equivalence(rank: int, world_size: int, group_name: Optional[str], counts: List[int],
                     sync_mode: str = "auto") -> Dict[str, float]:
    if group_name is not None:
        npu_syncbn.create_group(group_name, list(range(world_size)))
    try:
        mod = mint.SyncBatchNorm(4, momentum=0.2, process_group=group_name, dtype="float64", sync_mode=sync_mode)
        assert not mod.training, "the mint front starts in inference mode"
        assert mod.set_train() is mod and mod.training
        return _compare(mod, list(range(world_size)), rank, counts, 4, 0.2)
    finally:
        if group_name is not None:
            npu_syncbn.destroy_group(group_name)


def mint_group_errors(rank: int, world_size: int) -> Dict[str, str]:
    """Construction-time errors for named groups; returns the messages seen on this rank."""
    seen = {}
    try:
        mint.SyncBatchNorm(2, process_group="no-such-group")
    except ValueError as e:
        seen["unknown"] = str(e)
    # create_group itself rejects a rank id outside [0, world size)
    try:
        npu_syncbn.create_group("front-out-of-range", [0, world_size])
    except ValueError as e:
        seen["create_out_of_range"] = str(e)
    # a group recorded with ranks of a bigger world (e.g. made before the world was re-initialised)
    comm._NAMED_GROUPS["front-stale"], comm._NAMED_RANKS["front-stale"] = None, [0, world_size + 3]
    try:
        mint.SyncBatchNorm(2, process_group="front-stale")
    except ValueError as e:
        seen["stale_out_of_range"] = str(e)
    finally:
        del comm._NAMED_GROUPS["front-stale"], comm._NAMED_RANKS["front-stale"]
    # a group this rank is not in: made with [1]; rank 0 is recorded as a non-member
    npu_syncbn.create_group("front-only-1", [1])
    try:
        mint.SyncBatchNorm(2, process_group="front-only-1")
        seen["non_member"] = "constructed"
    except ValueError as e:
        seen["non_member"] = str(e)
    finally:
        npu_syncbn.destroy_group("front-only-1")
    return seen


# ----------------------------------------------------------------------------- mindspore front


def ms_equivalence(rank: int, world_size: int, process_groups, counts_by_group: Dict[int, List[int]],
                   momentum: float = 0.9, inner=(3, 2)) -> Dict[str, float]:
    """mindspore.SyncBatchNorm(momentum=momentum, process_groups=...) vs BatchNorm
    with torch momentum 1 - momentum on the batch of this rank's group."""
    mod = ms_front.SyncBatchNorm(3, momentum=momentum, process_groups=process_groups, dtype=torch.float64)
    assert not mod.training
    mod.set_train(True)
    members = list(range(world_size)) if process_groups is None else next(g for g in process_groups if rank in g)
    if process_groups is not None:
        assert mod.group_ranks == members
        assert comm.get_group_size(mod.process_group) == len(members)
    errs = _compare(mod, members, rank, counts_by_group[members[0]], 3, 1.0 - momentum, inner=inner)
    errs["group_size"] = float(comm.get_group_size(mod.process_group))
    return errs


def ms_process_groups_error(rank: int, world_size: int, process_groups) -> str:
    """Construct with ``process_groups``; the error type and message, or "ok"."""
    try:
        ms_front.SyncBatchNorm(2, process_groups=process_groups)
    except (TypeError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return "ok"


def ms_no_stats_sync_in_inference(rank: int, world_size: int) -> List[float]:
    """use_batch_statistics=True in inference mode syncs (batch stats of the whole world)."""
    mod = ms_front.SyncBatchNorm(2, use_batch_statistics=True, dtype="float64").to(rank_device())
    x = torch.full((2, 2), float(rank * 10), dtype=torch.float64, device=rank_device())
    mod(x)  # inference mode: still batch statistics of both ranks, moving stats updated
    return mod.moving_mean.cpu().tolist()


def ms_rank_in_no_group(rank: int, world_size: int, process_groups) -> Dict[str, float]:
    """A rank in none of ``process_groups`` normalizes with its own batch
    (compared with BatchNorm2d on that batch alone); a group of one does the same."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = ms_front.SyncBatchNorm(3, process_groups=process_groups, dtype=torch.float64).set_train()
    errs = _compare(mod, [rank], rank, [2 + 3 * rank], 3, 0.1)
    errs.pop("num_batches_tracked_equal")
    errs["synchronized"] = float(mod.synchronized)
    return errs


# ----------------------------------------------------------------------------- torch front


def torch_front_error(rank: int, world_size: int, case: str) -> str:
    """The torch front's error for a bad argument on a synchronized training
    step ("type: message"), or "ok"."""
    bn = npu_syncbn.SyncBatchNorm(3).train()
    x = torch.randn(4, 3, 5)
    residual = None
    if case == "float64 weight":
        bn.weight.data = bn.weight.data.double()
    elif case == "float64 running_var":
        bn.running_var = bn.running_var.double()
    elif case == "residual shape":
        residual = torch.randn(4, 2, 5)
    try:
        bn(x, residual)
    except (TypeError, ValueError, RuntimeError) as e:
        return f"{type(e).__name__}: {e}"
    return "ok"
