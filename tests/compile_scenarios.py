"""Rank-side scenario: a model with SyncBatchNorm under torch.compile trains like eager."""
from __future__ import annotations

import torch
import torch.nn as nn

import fuse_scenarios
import npu_syncbn
from dist_utils import rank_device


def _net(sync_mode: str, fuse: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2)]
    if fuse:  # also a residual block: bn2 folds "+= identity" and the ReLU
        layers.append(fuse_scenarios.BasicBlock(2, 2))
    net = npu_syncbn.convert_sync_batchnorm(nn.Sequential(*layers), fuse=fuse)
    fused = [m for m in net.modules() if isinstance(m, npu_syncbn.SyncBatchNorm) and m.activation == "relu"]
    assert len(fused) == (3 if fuse else 0), f"fused layers: {fused}"
    for m in net.modules():
        if isinstance(m, npu_syncbn.SyncBatchNorm):
            m.sync_mode = sync_mode
    return net


def compiled_matches_eager(rank: int, world_size: int, sync_mode: str, fullgraph: bool, backend: str, fuse: bool = False):
    """Train an eager and a compiled copy side by side for 3 SGD steps; return
    the worst differences in outputs, input grads, parameters and running stats."""
    import torch._dynamo

    torch._dynamo.reset()
    dev = rank_device()
    eager, compiled = _net(sync_mode, fuse).to(dev), _net(sync_mode, fuse).to(dev)
    fast = torch.compile(compiled, fullgraph=fullgraph, backend=backend)
    opt_e = torch.optim.SGD(eager.parameters(), lr=0.1)
    opt_c = torch.optim.SGD(compiled.parameters(), lr=0.1)
    worst = {"output": 0.0, "grad_input": 0.0}
    for step in range(3):
        x = torch.randn(3 + rank, 3, 6, 6, generator=torch.Generator().manual_seed(10 * step + rank)).to(dev)
        xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
        ye, yc = eager(xe), fast(xc)
        ye.square().mean().backward()
        yc.square().mean().backward()
        for net in (eager, compiled):  # DDP would average these; do it by hand
            for p in net.parameters():
                torch.distributed.all_reduce(p.grad)
                p.grad /= world_size
        opt_e.step(), opt_c.step(), opt_e.zero_grad(), opt_c.zero_grad()
        worst["output"] = max(worst["output"], float((ye - yc).detach().abs().max()))
        worst["grad_input"] = max(worst["grad_input"], float((xe.grad - xc.grad).abs().max()))
    worst["state"] = max(float((a.float() - b.float()).abs().max()) for a, b in zip(eager.state_dict().values(), compiled.state_dict().values()))
    worst["graph_breaks"] = (torch._dynamo.explain(_net(sync_mode, fuse).to(dev))(torch.randn(2, 3, 6, 6, device=dev)).graph_break_count
                             if fullgraph else -1)
    return worst


def compiled_matches_eager_or_why_not(rank: int, world_size: int, sync_mode: str, fullgraph: bool, backend: str):
    """:func:`compiled_matches_eager`, or ``{"unsupported": why}`` when inductor
    has no code generator for the device (every rank fails alike, at the first
    compile, before any collective)."""
    try:
        return compiled_matches_eager(rank, world_size, sync_mode, fullgraph, backend)
    except Exception as exc:
        text = str(exc)
        if type(exc).__name__ == "InductorError" and "KeyError: 'npu'" in text:
            return {"unsupported": text.strip().splitlines()[0]}
        raise


HOST_SYNC_OPS = {"aten._local_scalar_dense", "aten.equal", "aten.is_nonzero", "aten.item"}


def host_syncs_in_step(rank: int, world_size: int, sync_mode: str, momentum, fused: bool = False):
    """Ops of one forward+backward that would read device values on the host.

    Records every op dispatched at the top level of the step (what runs on the
    NPU stream there); the CPU kernels below them are not part of the NPU path."""
    import os

    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(str(func.overloadpacket._qualified_op_name).replace("::", "."))
            return func(*args, **(kwargs or {}))

    os.environ["NPU_SYNCBN_CHECK"] = "never"  # what accelerators get by default
    try:
        m = npu_syncbn.SyncBatchNorm(4, momentum=momentum, sync_mode=sync_mode, activation="relu" if fused else None)
        x = torch.randn(3, 4, 5, requires_grad=True)
        r = torch.randn(3, 4, 5, requires_grad=True) if fused else None
        # One step before recording: a group's first collective sets up the
        # shared-memory channel once, reading its agreement on the host.
        m(x, r).sum().backward()
        rec = Recorder()
        with rec:
            y = m(x, r)
            y.backward(torch.ones_like(y))
    finally:
        os.environ.pop("NPU_SYNCBN_CHECK")
    return sorted(rec.names & HOST_SYNC_OPS), sorted(n for n in rec.names if n.startswith(("npu_syncbn.", "aten.threshold")))
