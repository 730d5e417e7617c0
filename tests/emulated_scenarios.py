"""Rank-side scenarios of tests/test_emulated_training.py: training on the
emulated npu device over "hccl" (``ranks(n, "npu")``), compared on CPU copies
with float64 BatchNorm on the global batch."""
from __future__ import annotations

import copy
import io
from typing import Dict

import torch
import torch.distributed as dist
import torch.nn as nn

import npu_syncbn
from npu_syncbn import emulation


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().cpu().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1.0))


def step_equals_global_batchnorm(rank: int, world_size: int, momentum) -> Dict[str, float]:
    """What the emulated device promises: SyncBatchNorm steps on "npu" under "hccl" equal
    BatchNorm2d on the global batch in float64 (output, input gradient,
    running stats) and make no host transfer."""
    assert dist.get_backend() == "hccl" and npu_syncbn.ops.npu.ROUTE == "emulated"
    g = torch.Generator().manual_seed(3)
    X = torch.randn(4 * world_size, 5, 6, 7, generator=g, dtype=torch.float64) * 2 + 1
    G = torch.randn(X.shape, generator=g, dtype=torch.float64)
    mine = slice(4 * rank, 4 * rank + 4)
    bn = npu_syncbn.SyncBatchNorm(5, momentum=momentum).npu()
    ref = nn.BatchNorm2d(5, momentum=momentum).double()
    x = X[mine].float().npu().requires_grad_(True)
    grad = G[mine].float().npu()
    out = {"device": str(x.device), "param_device": str(bn.weight.device)}
    worst = dict.fromkeys(["output", "grad_input", "running_mean", "running_var"], 0.0)
    transfers = 0
    for _ in range(2):
        x.grad = None
        before = emulation.host_transfers()
        y = bn(x)
        y.backward(grad)
        transfers += emulation.host_transfers() - before
        Xr = X.clone().requires_grad_(True)
        yr = ref(Xr)
        yr.backward(G)
        worst["output"] = max(worst["output"], _rel(y, yr[mine]))
        worst["grad_input"] = max(worst["grad_input"], _rel(x.grad, Xr.grad[mine]))
        worst["running_mean"] = max(worst["running_mean"], _rel(bn.running_mean, ref.running_mean))
        worst["running_var"] = max(worst["running_var"], _rel(bn.running_var, ref.running_var))
    out.update(worst, transfers=transfers, output_device=str(y.device), batches=int(bn.num_batches_tracked))
    return out


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 5 * 5, 3))


def ddp_convert_state_dict_round_trip(rank: int, world_size: int) -> Dict[str, object]:
    """convert -> .npu() -> DDP training -> state_dict to CPU (torch.save with
    map_location="cpu") -> revert for CPU inference, and back to npu: every
    stage keeps the trained weights and statistics."""
    g = torch.Generator().manual_seed(9)
    X = torch.randn(2 * world_size, 3, 5, 5, generator=g)
    T = torch.randint(0, 3, (2 * world_size,), generator=g)
    mine = slice(2 * rank, 2 * rank + 2)

    reference = _net()  # plain BatchNorm2d on the global batch, one process, CPU
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    model = npu_syncbn.convert_sync_batchnorm(_net()).npu()
    types = sorted({type(m).__name__ for m in model.modules()})
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(ddp(X[mine].npu()), T[mine].npu()).backward()
        opt.step()
        ref_opt.zero_grad()
        # DDP averages the ranks' mean losses: the mean over the global batch here
        nn.functional.cross_entropy(reference(X), T).backward()
        ref_opt.step()

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    on_cpu = torch.load(buffer, map_location="cpu")
    trained = max(_rel(on_cpu[k], v) for k, v in reference.state_dict().items())

    back = npu_syncbn.revert_sync_batchnorm(copy.deepcopy(model).cpu())
    back.load_state_dict(on_cpu)
    back.eval(), reference.eval()
    with torch.no_grad():
        cpu_inference = _rel(back(X), reference(X))

    again = npu_syncbn.convert_sync_batchnorm(_net()).npu()
    again.load_state_dict(on_cpu)
    again.eval()
    with torch.no_grad():
        npu_inference = _rel(again(X.npu()), reference(X))
    return {"types": types, "state_devices": sorted({str(v.device) for v in model.state_dict().values()}),
            "loaded_devices": sorted({str(v.device) for v in on_cpu.values()}),
            "reverted": sorted({type(m).__name__ for m in back.modules()}),
            "again_devices": sorted({str(v.device) for v in again.state_dict().values()}),
            "trained": trained, "cpu_inference": cpu_inference, "npu_inference": npu_inference}


def kernel_error_on_every_rank(rank: int, world_size: int) -> Dict[str, str]:
    """Every rank launches a kernel that reads past its weight: each gets the
    twin's error naming the op and kernel, and the group still works after."""
    x = torch.randn(3, 4, 5, device="npu")
    mean, invstd = torch.zeros(4, device="npu"), torch.ones(4, device="npu")
    try:
        torch.ops.npu_syncbn_ascendc.batch_norm_elemt(x, torch.ones(2, device="npu"), None, mean, invstd, 1e-5)
        error = "no error"
    except RuntimeError as e:
        error = str(e).splitlines()[0]
    t = torch.ones(2, device="npu")
    dist.all_reduce(t)
    return {"error": error, "after": t.cpu().tolist()}


def cpu_tensors_refused(rank: int, world_size: int) -> str:
    """HCCL takes device tensors only; the emulation refuses CPU ones alike."""
    try:
        dist.all_reduce(torch.ones(2))
    except RuntimeError as e:
        return str(e).splitlines()[0]
    return "accepted"


def layout_copies_in_step(rank: int, world_size: int, layout: str) -> Dict[str, object]:
    """Bytes the emulated device copied within itself during one SyncBatchNorm
    training step (channels_last and 2-D input run the C-last kernels with
    no layout copy), the layouts of y and dx, and the errors
    against float64 BatchNorm on the global batch."""
    shapes = {"channels_last": (4, 32, 6, 5), "channels_last_3d": (2, 16, 3, 4, 5), "2d": (24, 40), "strided": (4, 32, 6, 5)}
    shape = shapes[layout]
    g = torch.Generator().manual_seed(11)
    X = torch.randn((shape[0] * world_size,) + shape[1:], generator=g, dtype=torch.float64) * 2 + 3
    G = torch.randn(X.shape, generator=g, dtype=torch.float64)
    mine = slice(shape[0] * rank, shape[0] * rank + shape[0])
    fmt = {"channels_last": torch.channels_last, "channels_last_3d": torch.channels_last_3d}.get(layout)
    x, grad = X[mine].float().npu(), G[mine].float().npu()
    if fmt is not None:
        x, grad = x.contiguous(memory_format=fmt), grad.contiguous(memory_format=fmt)
    if layout == "strided":  # every other element of a wider tensor: dense in no layout
        wide = torch.zeros(shape[:-1] + (2 * shape[-1],), device=x.device)
        x = wide[..., ::2]
        x.copy_(X[mine].float().npu())
    x.requires_grad_(True)
    bn = npu_syncbn.SyncBatchNorm(shape[1]).npu()
    ref = {2: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[len(shape)](shape[1]).double()
    bn(x).sum().backward()  # a warm-up step: lazy first-call work stays out of the count
    x.grad = None
    before = emulation.device_copy_bytes()
    y = bn(x)
    y.backward(grad)
    copied = emulation.device_copy_bytes() - before
    Xr = X.clone().requires_grad_(True)
    ref(Xr).sum().backward()
    Xr.grad = None
    yr = ref(Xr)
    yr.backward(G)
    keep = fmt or torch.contiguous_format
    return {
        "copied_bytes": copied,
        "activation_bytes": x.numel() * x.element_size(),
        "y_layout_kept": bool(y.is_contiguous(memory_format=keep)),
        "dx_layout_kept": bool(x.grad.is_contiguous(memory_format=keep)),
        "output": _rel(y, yr[mine]),
        "grad_input": _rel(x.grad, Xr.grad[mine]),
    }
