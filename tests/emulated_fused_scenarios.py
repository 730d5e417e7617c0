"""Rank-side scenarios of tests/test_emulated_fused.py: the fused activation
(relu(bn(x) + residual)) on the emulated npu device, where our AscendC
kernels batch_norm_elemt_act and batch_norm_backward_reduce_relu run in the
twin exactly as npu_ops.cpp launches them on an NPU."""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn as nn

import npu_syncbn
from npu_syncbn import emulation

ops = torch.ops.npu_syncbn
TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}

# (shape, memory format): the row kernels, the C-last kernels (channels_last,
# 2-D) and a row longer than a tile (the largest tiles, nearest Select's
# 184 KiB scratch offset).
CASES = [((4, 3, 7, 9), None), ((4, 6, 5, 7), torch.channels_last), ((37, 13), None), ((2, 2, 30000), None)]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1.0))


def _per_channel(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.double().reshape((1, -1) + (1,) * (ndim - 2))


# The kernels' GM buffers of the input's shape (the rest are per-channel vectors).
ACTIVATIONS = ("input", "output", "residual", "grad_out", "grad_sum", "grad_input")


def _passes(log, kernel: str, nbytes: int) -> Dict[str, tuple]:
    """{buffer: (reads, writes)} in activations of kernel's launch, for its
    activation-shaped buffers."""
    bufs = next(b for k, _, b in log if k == kernel)
    return {n: (r / nbytes, w / nbytes) for n, (r, w) in bufs.items() if n in ACTIVATIONS and r + w}


def fused_ops_match_references(rank: int, world_size: int) -> List[str]:
    """Each fused op against (a) the unfused ops it replaces on the same
    device, bitwise: our elemt kernel, then torch's add and relu; torch's
    threshold_backward, then our backward_reduce (sums to float tolerance: the
    fused kernel's tiles are smaller, so float32 lanes add in another order);
    (b) float64 formulas; and (c) the GM traffic of one pass per activation.
    Returns the failures found."""
    bad: List[str] = []
    g = torch.Generator().manual_seed(5 + rank)
    for shape, fmt in CASES:
        c = shape[1]
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            for residual in (False, True):
                for relu in (False, True):
                    if not (residual or relu):
                        continue
                    tag = f"{shape} {fmt} {dtype} residual={residual} relu={relu}"
                    X = torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1
                    R = torch.randn(shape, generator=g, dtype=torch.float64)
                    DY = torch.randn(shape, generator=g, dtype=torch.float64)
                    w, b = torch.randn(c, generator=g), torch.randn(c, generator=g)
                    mean, invstd = torch.randn(c, generator=g) * 0.3 + 1, torch.rand(c, generator=g) + 0.5
                    x, r, dy = (t.to(dtype).npu() for t in (X, R, DY))
                    if fmt is not None:
                        x, r, dy = (t.contiguous(memory_format=fmt) for t in (x, r, dy))
                    dev = [t.npu() for t in (w, b, mean, invstd)]
                    emulation.take_kernel_log()
                    y = ops.batch_norm_elemt_act(x, *dev[:2], *dev[2:], 1e-5, r if residual else None, relu)
                    log = emulation.take_kernel_log()
                    unfused = ops.batch_norm_elemt(x, *dev, 1e-5)
                    if residual:
                        unfused = unfused + r
                    if relu:
                        unfused = torch.relu(unfused)
                    if not torch.equal(y.cpu(), unfused.cpu()):
                        bad.append(f"elemt_act != elemt + add + relu: {tag}")
                    nd = len(shape)
                    ref = (X.to(dtype).double() - _per_channel(mean, nd)) * _per_channel(invstd * w, nd) + _per_channel(b, nd)
                    if residual:
                        ref = ref + R.to(dtype).double()
                    if relu:
                        ref = ref.clamp_min(0)
                    if _rel(y, ref) > TOL[dtype]:
                        bad.append(f"elemt_act vs float64: {_rel(y, ref):.2e} {tag}")
                    if fmt is not None and not y.is_contiguous(memory_format=fmt):
                        bad.append(f"elemt_act lost the layout: {tag}")
                    kernel = "batch_norm_elemt_act" + ("_clast" if fmt is not None or len(shape) == 2 else "")
                    want = {"input": (1, 0), "output": (0, 1), **({"residual": (1, 0)} if residual else {})}
                    got = _passes(log, kernel, x.numel() * x.element_size())
                    if got != want:
                        bad.append(f"elemt_act traffic {got}: {tag}")
                    if not relu:
                        continue
                    emulation.take_kernel_log()
                    sum_dy, sum_dy_xmu, gw, gb, grad_sum = ops.batch_norm_backward_reduce_relu(
                        dy, y, x, dev[2], dev[3], dev[0], True, True, True)
                    log = emulation.take_kernel_log()
                    gate = torch.ops.aten.threshold_backward(dy, y, 0)
                    if not torch.equal(grad_sum.cpu(), gate.cpu()):
                        bad.append(f"grad_sum != threshold_backward: {tag}")
                    plain = ops.batch_norm_backward_reduce(gate, x, dev[2], dev[3], dev[0], True, True, True)
                    G = gate.cpu().double()
                    dims = [0] + list(range(2, len(shape)))
                    xmu = x.cpu().double() - _per_channel(mean, nd)
                    ref64 = (G.sum(dims), (G * xmu).sum(dims))
                    for name, got, other, truth in zip(("sum_dy", "sum_dy_xmu"), (sum_dy, sum_dy_xmu), plain, ref64):
                        if _rel(got, truth) > 1e-4 or _rel(got, other) > 1e-4:
                            bad.append(f"{name} vs float64 {_rel(got, truth):.2e}: {tag}")
                    if _rel(gb, sum_dy) > 0 or _rel(gw, sum_dy_xmu * dev[3]) > 1e-6:
                        bad.append(f"grad_weight / grad_bias: {tag}")
                    kernel = "batch_norm_backward_reduce_relu" + ("_clast" if fmt is not None or len(shape) == 2 else "")
                    want = {"grad_out": (1, 0), "output": (1, 0), "input": (1, 0), "grad_sum": (0, 1)}
                    got = _passes(log, kernel, x.numel() * x.element_size())
                    if got != want:
                        bad.append(f"backward_reduce_relu traffic {got}: {tag}")
    return bad


def relu_keeps_nans(rank: int, world_size: int) -> Dict[str, list]:
    """NaN semantics: relu(NaN) is NaN (as torch.relu) and threshold_backward
    passes the gradient where the output is NaN; on the npu kernels."""
    x = torch.tensor([1.0, float("nan"), -2.0, 0.0, 3.0]).reshape(1, 1, 5)
    one, zero = torch.ones(1).npu(), torch.zeros(1).npu()
    y = ops.batch_norm_elemt_act(x.npu(), None, None, zero, one, 0.0, None, True).cpu()
    dy = torch.arange(1.0, 6.0).reshape(1, 1, 5)
    out = torch.tensor([1.0, float("nan"), 0.0, 0.0, 3.0]).reshape(1, 1, 5)
    g = ops.batch_norm_backward_reduce_relu(dy.npu(), out.npu(), x.nan_to_num().npu(), zero, one, None,
                                            True, True, True)[4].cpu()
    return {"y": [str(v) for v in y.flatten().tolist()], "grad_sum": g.flatten().tolist()}


def fused_step_equals_global_batchnorm(rank: int, world_size: int, layout: str) -> Dict[str, object]:
    """SyncBatchNorm(activation="relu") with a residual on "npu" under "hccl":
    output, input, residual, weight and bias gradients against float64
    BatchNorm on the global batch + residual + ReLU; the kernels the step
    launched and the activation passes they moved."""
    shape = {"row": (4, 8, 6, 5), "channels_last": (4, 8, 6, 5), "2d": (12, 16)}[layout]
    fmt = torch.channels_last if layout == "channels_last" else None
    g = torch.Generator().manual_seed(21)
    full = (shape[0] * world_size,) + shape[1:]
    X = torch.randn(full, generator=g, dtype=torch.float64) * 2 + 1
    R = torch.randn(full, generator=g, dtype=torch.float64)
    G = torch.randn(full, generator=g, dtype=torch.float64)
    mine = slice(shape[0] * rank, shape[0] * (rank + 1))

    def local(t):
        t = t[mine].float().npu()
        return t.contiguous(memory_format=fmt) if fmt is not None else t

    x, r, grad = local(X).requires_grad_(True), local(R).requires_grad_(True), local(G)
    bn = npu_syncbn.SyncBatchNorm(shape[1], activation="relu").npu()
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 1.5, shape[1]))
        bn.bias.copy_(torch.linspace(-0.3, 0.3, shape[1]))
    ref = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(shape[1]).double()
    ref.load_state_dict({k: v.double().cpu() for k, v in bn.state_dict().items()})
    emulation.take_kernel_log()
    y = bn(x, r)
    y.backward(grad)
    log = emulation.take_kernel_log()
    Xr, Rr = X.clone().requires_grad_(True), R.clone().requires_grad_(True)
    yr = torch.relu(ref(Xr) + Rr)
    yr.backward(G)
    nbytes = x.numel() * x.element_size()
    passes = sum(r_ + w_ for _, _, bufs in log for n, (r_, w_) in bufs.items() if n in ACTIVATIONS) / nbytes
    return {
        "kernels": [k for k, _, _ in log],
        "activation_passes": passes,
        "output": _rel(y, yr[mine]),
        "grad_input": _rel(x.grad, Xr.grad[mine]),
        "grad_residual": _rel(r.grad, Rr.grad[mine]),
        # this rank's share; the ranks' shares sum to the global batch's
        "grad_weight": bn.weight.grad.cpu().double().tolist(), "grad_bias": bn.bias.grad.cpu().double().tolist(),
        "ref_grad_weight": ref.weight.grad.tolist(), "ref_grad_bias": ref.bias.grad.tolist(),
        "running_mean": _rel(bn.running_mean, ref.running_mean),
        "y_layout_kept": bool(y.is_contiguous(memory_format=fmt or torch.contiguous_format)),
    }


def fused_ops_without_compiler_auto_sync(rank: int, world_size: int) -> List[str]:
    """The same checks with the twin's model of bisheng's --cce-auto-sync off:
    the fused kernels order their own pipes, as the plain ones do."""
    from npu_syncbn.emulation import device

    device.extension().set_auto_sync(False)
    try:
        return fused_ops_match_references(rank, world_size)
    finally:
        device.extension().set_auto_sync(True)
