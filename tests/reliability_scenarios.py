"""Rank-side scenarios of the reliability tests (fingerprints, bounded waits,
bad input, NaN/Inf, strided inputs, resumed training).

Each function runs on every rank of a RankPool as ``fn(rank, world_size, *args)``.
Scenarios that expect an error catch it and return the message, and then prove
that the ranks are still in step by running one healthy synchronized forward on
the same group, so the pool stays usable for the next test.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import time
from collections import OrderedDict
from typing import Dict, List

import torch
import torch.distributed as dist
import torch.nn as nn

import npu_syncbn
from npu_syncbn.modules import SyncBatchNorm


_SHORT_GROUPS: List[dist.ProcessGroup] = []


def short_group(seconds: float) -> dist.ProcessGroup:
    """A group of every rank whose collectives give up after ``seconds``
    (collective call: every rank must create it, in the same order). The
    previous scenario's group is destroyed first (a local operation), so the
    pool's ranks do not accumulate gloo connections."""
    while _SHORT_GROUPS:
        dist.destroy_process_group(_SHORT_GROUPS.pop())
    group = dist.new_group(list(range(dist.get_world_size())), timeout=datetime.timedelta(seconds=seconds))
    _SHORT_GROUPS.append(group)
    return group


def _in_step(module: nn.Module, c: int, rank: int) -> bool:
    """One healthy synchronized forward+backward on ``module``: True when the
    result equals the statistics of the global batch (both ranks' inputs)."""
    module.train()
    x = torch.randn(3, c, 4, generator=torch.Generator().manual_seed(10 + rank), requires_grad=True)
    y = module(x)
    y.sum().backward()
    both = torch.cat([torch.randn(3, c, 4, generator=torch.Generator().manual_seed(10 + r)) for r in range(2)])
    ref = nn.functional.batch_norm(both.double(), None, None, training=True, eps=module.eps)
    want = ref[3 * rank : 3 * rank + 3]
    if module.affine:
        want = want * module.weight.double().detach().reshape(1, -1, 1) + module.bias.double().detach().reshape(1, -1, 1)
    return bool(torch.allclose(y.double(), want, atol=1e-5))


def _two_layer_model(c_first: int, c_second: int, mode: str, group=None) -> nn.Module:
    model = nn.Sequential(OrderedDict(stem_bn=nn.BatchNorm1d(c_first), head_bn=nn.BatchNorm1d(c_second)))
    model = npu_syncbn.convert_sync_batchnorm(model, process_group=group)
    for m in model.modules():
        if isinstance(m, SyncBatchNorm):
            m.sync_mode = mode
    return model


# ----------------------------------------------------------------- fingerprints

@contextlib.contextmanager
def check_level(level: str):
    """Run with $NPU_SYNCBN_CHECK set to ``level``."""
    os.environ["NPU_SYNCBN_CHECK"] = level
    try:
        yield
    finally:
        os.environ.pop("NPU_SYNCBN_CHECK", None)


def layers_out_of_order(rank: int, world_size: int, mode: str, c_second: int, check: str = "auto",
                        warm: bool = False) -> Dict:
    """Rank 0 calls stem_bn first, rank 1 head_bn first: every rank must raise
    naming its layer and the other rank, without mixing statistics. ``warm``:
    one step in the same order on every rank first, so that the out-of-order
    call is no layer's first call."""
    with check_level(check):
        return _layers_out_of_order(rank, mode, c_second, warm)


def _layers_out_of_order(rank: int, mode: str, c_second: int, warm: bool = False) -> Dict:
    group = short_group(5.0)  # a regression to a hang costs 5 s, not the pool's 60
    model = _two_layer_model(4, c_second, mode, group)
    if warm:
        model.stem_bn(torch.randn(3, 4, 2))
        model.head_bn(torch.randn(3, c_second, 2))
        for m in model.modules():  # back to a fresh state for the checks below
            if isinstance(m, SyncBatchNorm):
                m.reset_running_stats()
    order = ["stem_bn", "head_bn"] if rank == 0 else ["head_bn", "stem_bn"]
    layer = getattr(model, order[0])
    start = time.monotonic()
    try:
        layer(torch.randn(3, layer.num_features, 2))
        msg, kind = None, None
    except RuntimeError as exc:
        msg, kind = str(exc), type(exc).__name__
    elapsed = time.monotonic() - start
    untouched = all(
        bool((m.running_mean == 0).all() and (m.running_var == 1).all() and int(m.num_batches_tracked) == 0)
        for m in model.modules() if isinstance(m, SyncBatchNorm)
    )
    # Same order on every rank now: the group must still work.
    healthy = _in_step(model.stem_bn, 4, rank)
    return {"msg": msg, "kind": kind, "elapsed": elapsed, "untouched": untouched, "healthy": healthy, "layer": order[0]}


def check_collectives_per_call(rank: int, world_size: int, check: str, calls: int = 3) -> List[int]:
    """How many fixed-size fingerprint checks each of ``calls`` forward calls of
    one layer starts (counted at comm.all_reduce_sum_start)."""
    from npu_syncbn import comm

    started = []
    real = comm.all_reduce_sum_start

    def counting(buf, pg):
        started.append(buf.dtype)
        return real(buf, pg)

    bn = SyncBatchNorm(4, layer_name="counted.bn")
    comm.all_reduce_sum_start = counting
    try:
        with check_level(check):
            counts = []
            for _ in range(calls):
                before = len(started)
                bn(torch.randn(3, 4, 2))
                counts.append(len(started) - before)
    finally:
        comm.all_reduce_sum_start = real
    return counts


def dtype_differs(rank: int, world_size: int, mode: str, check: str = "auto") -> Dict:
    """Same layer, float32 input on rank 0 and float16 on rank 1 (both give
    float32 statistics, so only the fingerprint's dtype field tells them apart)."""
    with check_level(check):
        return _dtype_differs(rank, mode)


def _dtype_differs(rank: int, mode: str) -> Dict:
    group = short_group(5.0)
    bn = SyncBatchNorm(4, process_group=group, sync_mode=mode, layer_name="features.bn1")
    dtype = torch.float32 if rank == 0 else torch.float16
    try:
        bn(torch.randn(3, 4, 2).to(dtype))
        msg = None
    except RuntimeError as exc:
        msg = str(exc)
    return {"msg": msg, "healthy": _in_step(bn, 4, rank)}


def channels_differ(rank: int, world_size: int, mode: str, check: str) -> Dict:
    """Same layer name, C=4 on rank 0 and C=6 on rank 1: the statistics buffers
    differ in size. Every rank must raise (naming the layer and both C) within
    the group's 5 s timeout and never use statistics from a short buffer."""
    os.environ["NPU_SYNCBN_CHECK"] = check
    try:
        group = short_group(5.0)
        c = 4 if rank == 0 else 6
        bn = SyncBatchNorm(c, process_group=group, sync_mode=mode, layer_name="backbone.bn")
        start = time.monotonic()
        try:
            y = bn(torch.randn(3, c, 2))
            msg, result = None, y
        except RuntimeError as exc:
            msg, result = str(exc), None
        elapsed = time.monotonic() - start
    finally:
        os.environ.pop("NPU_SYNCBN_CHECK", None)
    return {"msg": msg, "elapsed": elapsed, "returned": result is not None,
            "running_mean_untouched": bool((bn.running_mean == 0).all())}


# ----------------------------------------------------------------- bounded waits

def rank_skips_forward(rank: int, world_size: int, mode: str, timeout_s: float) -> Dict:
    """Rank 1 returns without calling the layer: rank 0 must raise within the
    group's timeout with an error naming the group and the layer."""
    group = short_group(timeout_s)
    bn = SyncBatchNorm(4, process_group=group, sync_mode=mode, layer_name="encoder.bn3")
    if rank == 1:
        return {"skipped": True}
    start = time.monotonic()
    try:
        bn(torch.randn(3, 4, 2))
        return {"msg": None, "elapsed": time.monotonic() - start}
    except RuntimeError as exc:
        return {"msg": str(exc), "elapsed": time.monotonic() - start}


def rank_skips_backward(rank: int, world_size: int, timeout_s: float) -> Dict:
    """Both ranks run the forward; rank 1 never runs the backward: rank 0's
    backward must raise within the timeout naming the layer."""
    group = short_group(timeout_s)
    bn = SyncBatchNorm(4, process_group=group, sync_mode="allgather", layer_name="encoder.bn4")
    x = torch.randn(3, 4, 2, requires_grad=True)
    y = bn(x)
    if rank == 1:
        return {"skipped": True}
    start = time.monotonic()
    try:
        y.sum().backward()
        return {"msg": None, "elapsed": time.monotonic() - start}
    except RuntimeError as exc:
        return {"msg": str(exc), "elapsed": time.monotonic() - start}


# ----------------------------------------------------------------- bad input on a group

def bad_input_on_group(rank: int, world_size: int, kinds: List[str]) -> List[str]:
    """Bad input to a synchronized layer fails before any collective, on every
    rank alike, so the ranks stay in step."""
    bn = SyncBatchNorm(4, sync_mode="allgather", layer_name="bad")
    inputs = {"int64": torch.ones(3, 4, 2, dtype=torch.int64), "C=5": torch.randn(3, 5, 2), "1-D": torch.randn(4)}
    msgs = []
    for kind in kinds:
        try:
            bn(inputs[kind])
            msgs.append("no error")
        except Exception as exc:  # any type: the test checks it
            msgs.append(f"{type(exc).__name__}: {exc}")
    msgs.append("healthy" if _in_step(bn, 4, rank) else "not healthy")
    return msgs


def named_group_errors(rank: int, world_size: int) -> List[str]:
    """create_group / destroy_group / a module with a bad group name."""
    msgs = []
    for args in (("", [0]), (5, [0]), ("g", []), ("g", [0, 0]), ("g", [0, world_size]), ("g", "01"), ("g", [0.0]), ("g", [True])):
        try:
            npu_syncbn.create_group(*args)
            msgs.append("no error")
        except (TypeError, ValueError) as exc:
            msgs.append(f"{type(exc).__name__}: {exc}")
    npu_syncbn.create_group("pair", list(range(world_size)))
    try:
        try:
            npu_syncbn.create_group("pair", [0])
            msgs.append("no error")
        except ValueError as exc:
            msgs.append(f"{type(exc).__name__}: {exc}")
    finally:
        npu_syncbn.destroy_group("pair")
    for call in (lambda: npu_syncbn.destroy_group("pair"), lambda: npu_syncbn.get_rank("nope"),
                 lambda: SyncBatchNorm(4, process_group="nope")(torch.randn(2, 4)),
                 lambda: npu_syncbn.get_group_size(3)):
        try:
            call()
            msgs.append("no error")
        except (TypeError, ValueError) as exc:
            msgs.append(f"{type(exc).__name__}: {exc}")
    # a non-member asking for a member-only group
    npu_syncbn.create_group("only0", [0])
    try:
        if rank == 1:
            try:
                npu_syncbn.get_rank("only0")
                msgs.append("no error")
            except ValueError as exc:
                msgs.append(f"{type(exc).__name__}: {exc}")
        else:
            msgs.append(f"member rank {npu_syncbn.get_rank('only0')}")
    finally:
        npu_syncbn.destroy_group("only0")
    return msgs


# ----------------------------------------------------------------- layouts, NaN / Inf

def _global_batch(n_per_rank, c, hw, seed, world_size):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn((n_per_rank * world_size, c) + hw, generator=g, dtype=torch.float64) * 1.7 + 0.4
    G = torch.randn(X.shape, generator=g, dtype=torch.float64)
    return X, G


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``x`` (N, C, H, W) in a strided form."""
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "permuted":  # stored as (W, N, H, C), viewed as (N, C, H, W)
        return x.permute(3, 0, 2, 1).contiguous().permute(1, 3, 2, 0)
    if layout == "sliced":  # every other element of a wider tensor along W and N
        wide = torch.zeros((x.shape[0] * 2,) + tuple(x.shape[1:3]) + (x.shape[3] * 2,), dtype=x.dtype)
        wide[::2, :, :, ::2] = x
        return wide[::2, :, :, ::2]
    raise ValueError(layout)


def strided_input_matches(rank: int, world_size: int, mode: str, layout: str) -> Dict[str, float]:
    """A non-contiguous / channels_last shard gives the float64 BatchNorm of the
    global batch (outputs, input grads, summed weight/bias grads, running stats)."""
    c, n = 5, 3
    X, G = _global_batch(n, c, (4, 6), 7, world_size)
    bn = SyncBatchNorm(c, sync_mode=mode, layer_name="strided")
    ref = nn.BatchNorm2d(c).double()
    with torch.no_grad():
        w, b = torch.linspace(0.5, 1.5, c), torch.linspace(-1, 1, c)
        bn.weight.copy_(w), bn.bias.copy_(b), ref.weight.copy_(w), ref.bias.copy_(b)
    sl = slice(rank * n, rank * n + n)
    x = _layout(X[sl].float(), layout).requires_grad_(True)
    if layout == "sliced":
        assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    y = bn(x)
    (y * G[sl].float()).sum().backward()
    Xr = X.clone().requires_grad_(True)
    yr = ref(Xr)
    (yr * G).sum().backward()
    gw, gb = bn.weight.grad.clone(), bn.bias.grad.clone()
    dist.all_reduce(gw), dist.all_reduce(gb)

    def rel(a, b):
        return float((a.double() - b).abs().max() / b.abs().max().clamp_min(1.0))

    out = {
        "output": rel(y.detach(), yr.detach()[sl]),
        "grad_input": rel(x.grad, Xr.grad[sl]),
        "grad_weight": rel(gw, ref.weight.grad),
        "grad_bias": rel(gb, ref.bias.grad),
        "running_mean": rel(bn.running_mean, ref.running_mean),
        "running_var": rel(bn.running_var, ref.running_var),
    }
    if layout == "channels_last":
        out["keeps_channels_last"] = float(y.is_contiguous(memory_format=torch.channels_last))
    return out


def nan_inf_like_local_bn(rank: int, world_size: int, mode: str) -> Dict:
    """NaN in rank 0's shard (channel 1) and +Inf in rank 1's (channel 2):
    outputs, running stats and input gradients are NaN exactly where
    torch.nn.BatchNorm2d on the global batch has NaN, and equal elsewhere."""
    c, n = 4, 2
    X, G = _global_batch(n, c, (3, 3), 11, world_size)
    X[0, 1, 1, 2] = float("nan")  # rank 0's shard
    X[n + 1, 2, 0, 0] = float("inf")  # rank 1's shard
    bn = SyncBatchNorm(c, sync_mode=mode, layer_name="nan")
    ref = nn.BatchNorm2d(c).double()
    sl = slice(rank * n, rank * n + n)
    x = X[sl].float().requires_grad_(True)
    y = bn(x)
    (y * G[sl].float()).sum().backward()
    Xr = X.clone().requires_grad_(True)
    yr = ref(Xr)
    (yr * G).sum().backward()

    def same(a, b, what):
        a, b = a.detach().double(), b.detach().double()
        nan_a, nan_b = torch.isnan(a), torch.isnan(b)
        if not torch.equal(nan_a, nan_b):
            return f"{what}: NaN at {nan_a.nonzero().tolist()} vs BatchNorm2d {nan_b.nonzero().tolist()}"
        ok = torch.isclose(a[~nan_a], b[~nan_b], rtol=1e-4, atol=1e-4)
        return None if bool(ok.all()) else f"{what}: finite values differ"

    problems = [same(y, yr[sl], "output"), same(bn.running_mean, ref.running_mean, "running_mean"),
                same(bn.running_var, ref.running_var, "running_var"), same(x.grad, Xr.grad[sl], "grad_input")]
    # The next step with clean data: like local BatchNorm, training outputs use
    # batch statistics only, so they are finite again although the running
    # stats of the NaN channels stay NaN (no crash, no hang, ranks in step).
    X2, _ = _global_batch(n, c, (3, 3), 12, world_size)
    y2 = bn(X2[sl].float())
    yr2 = ref(X2)
    problems.append(same(y2, yr2[sl], "next step output"))
    return {"problems": [p for p in problems if p], "nan_channels": sorted(set(torch.isnan(y).nonzero()[:, 1].tolist()))}


# ----------------------------------------------------------------- resumed training

def _resume_setup(seed: int, bn_momentum, sync_mode: str):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6, momentum=bn_momentum), nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2), nn.BatchNorm2d(8, momentum=bn_momentum), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 3 * 3, 5),
    )
    net = npu_syncbn.convert_sync_batchnorm(net)
    for m in net.modules():
        if isinstance(m, SyncBatchNorm):
            m.sync_mode = sync_mode
    model = nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4, nesterov=True)
    return model, opt


def _train(model, opt, rank: int, steps: range) -> None:
    model.train()
    for step in steps:
        g = torch.Generator().manual_seed(1000 * rank + step)
        x = torch.randn(3 + rank, 3, 8, 8, generator=g)  # uneven batches
        target = torch.randint(0, 5, (x.shape[0],), generator=g)
        loss = nn.functional.cross_entropy(model(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _snapshot(model, opt) -> Dict[str, torch.Tensor]:
    snap = {f"model.{k}": v.detach().clone() for k, v in model.module.state_dict().items()}
    for i, p in enumerate(model.module.parameters()):
        for k, v in opt.state[p].items():
            snap[f"opt.{i}.{k}"] = v.clone() if isinstance(v, torch.Tensor) else torch.tensor(v)
    return snap


def resume_matches(rank: int, world_size: int, tmpdir: str, steps: int, save_at: int, bn_momentum, sync_mode: str) -> Dict:
    """Train ``steps`` steps uninterrupted, then again with a save after
    ``save_at`` steps, a rebuild from scratch (other initial weights) and a
    load: every parameter, buffer and optimizer state must be bitwise equal."""
    model, opt = _resume_setup(0, bn_momentum, sync_mode)
    _train(model, opt, rank, range(steps))
    want = _snapshot(model, opt)
    del model, opt

    model, opt = _resume_setup(0, bn_momentum, sync_mode)
    _train(model, opt, rank, range(save_at))
    path = os.path.join(tmpdir, f"rank{rank}.pt")
    torch.save({"model": model.module.state_dict(), "optimizer": opt.state_dict()}, path)
    del model, opt

    model, opt = _resume_setup(1, bn_momentum, sync_mode)  # different initial weights: the load must restore all
    state = torch.load(path, weights_only=True)
    model.module.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    _train(model, opt, rank, range(save_at, steps))
    got = _snapshot(model, opt)

    differ = sorted(k for k in want if k not in got or not torch.equal(want[k], got[k]))
    missing = sorted(set(got) ^ set(want))
    tracked = [int(v) for k, v in got.items() if k.endswith("num_batches_tracked")]
    return {"differ": differ, "missing": missing, "keys": len(want), "tracked": tracked,
            "max_abs_diff": max((float((want[k].double() - got[k].double()).abs().max()) for k in differ if k in got), default=0.0)}


# ----------------------------------------------------------------- under torch.compile

def compiled_layers_out_of_order(rank: int, world_size: int, backend: str) -> Dict:
    """The out-of-order case with different channel counts inside one compiled
    graph: the fixed-size check must still run before the statistics
    collective (else gloo aborts the process), on every rank."""
    import torch._dynamo

    torch._dynamo.reset()
    model = _two_layer_model(4, 6, "allgather")

    class Swapped(nn.Module):
        def __init__(self, layers, first_stem):
            super().__init__()
            self.layers, self.first_stem = layers, first_stem

        def forward(self, x4, x6):
            if self.first_stem:
                return self.layers.stem_bn(x4).sum() + self.layers.head_bn(x6).sum()
            return self.layers.head_bn(x6).sum() + self.layers.stem_bn(x4).sum()

    net = torch.compile(Swapped(model, rank == 0), backend=backend, fullgraph=True)
    try:
        net(torch.randn(3, 4, 2), torch.randn(3, 6, 2))
        msg = None
    except RuntimeError as exc:
        msg = str(exc)
    torch._dynamo.reset()
    return {"msg": msg, "healthy": _in_step(model.stem_bn, 4, rank)}
