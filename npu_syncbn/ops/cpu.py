"""CPU kernels of the five ops (the emulation path used by CI and CPU training).

For float32/float16/bfloat16 input in a contiguous, channels_last(_3d) or 2-D
layout, stats, elemt, backward_reduce and backward_elemt run the fused one-pass
C kernels of ``cpu_fast`` (op_kernels/cpu/syncbn_cpu.cpp). Everything else
(float64, strided views, a grad_out whose layout differs from the input's, no
compiler, or ``NPU_SYNCBN_CPU_KERNELS=aten``) takes the aten composition below.

Each aten kernel is one or two passes of an aten CPU building block that already
handles channels_last, mixed half/float32 types and vectorization, so the CPU
path costs about what local BatchNorm costs:

* stats: ``batch_norm_update_stats`` (mean and biased variance in one call);
  float32 scratch running stats make it return float32 stats for half input.
* elemt: eval-mode ``batch_norm`` with unit variance and eps 0, i.e. exactly
  ``x * scale + shift`` per channel, the formula local BatchNorm uses; where a
  channel's |mean|/std is large that formula cancels, so ``(x - mean) * scale
  + bias`` is computed instead (one pass more).
* backward_reduce: eval-mode ``native_batch_norm_backward`` with unit variance
  gives Σdy and Σdy·(x - mean) in one pass.
* backward_elemt: two passes of the eval-mode batch_norm kernel; where a
  channel's |mean|/std is large, three passes around (x - mean) instead, so
  the mean does not cancel away the precision of dx.

aten crashes (SIGFPE) on some empty inputs, so empty batches are answered here
without calling it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import act, checks, cpu_fast
from .merge import invstd_to_var, merge_rank_stats, update_running_stats
from .schema import LIBRARY, qualified, stats_dtype


def _per_channel(v: Tensor, input: Tensor) -> Tensor:
    return v.reshape((1, -1) + (1,) * (input.dim() - 2))


def _unit_stats(c: int, dtype: torch.dtype):
    return torch.zeros(c, dtype=dtype), torch.ones(c, dtype=dtype)


def batch_norm_stats(input: Tensor, eps: float):
    c = checks.validate_stats(input, eps)
    sd = stats_dtype(input)
    if input.numel() == 0:
        return torch.zeros(c, dtype=sd), torch.full((c,), eps, dtype=sd).rsqrt()
    if sd is torch.float32:
        fast = cpu_fast.stats(input, eps)
        if fast is not None:
            return fast
    scratch_mean, scratch_var = _unit_stats(c, sd)
    mean, var = torch.batch_norm_update_stats(input, scratch_mean, scratch_var, 0.0)
    return mean, (var + eps).rsqrt()


def batch_norm_gather_stats_with_counts(input, mean, invstd, running_mean, running_var, momentum, eps, counts):
    checks.validate_gather(input, mean, invstd, running_mean, running_var, momentum, eps, counts)
    fast = cpu_fast.gather_merge(mean, invstd, counts, running_mean, running_var, momentum, eps)
    if fast is not None and fast != cpu_fast.NO_POSITIVE_COUNT:
        return fast
    return gather_stats(mean, invstd, running_mean, running_var, momentum, eps, counts)


def gather_stats(mean, invstd, running_mean, running_var, momentum, eps, counts):
    """Device-agnostic body of the gather op (also the NPU fallback).

    Every count 0 (every rank's batch empty) is not an error: the result is
    the statistics of no data, mean 0 and invstd 1/sqrt(eps) (what
    batch_norm_stats gives for an empty input), and the running stats stay
    unchanged, as local BatchNorm leaves them for an empty batch. (aten has
    no CPU kernel for this op; its CUDA kernel divides by the zero total and
    returns NaN statistics and NaN running stats.)"""
    var = invstd_to_var(invstd, eps)
    g_mean, g_var, total = merge_rank_stats(mean, var, counts)
    update_running_stats(running_mean, running_var, g_mean, g_var, total, momentum)
    return g_mean, (g_var + eps).rsqrt()


def batch_norm_elemt(input, weight, bias, mean, invstd, eps):
    c = checks.validate_elemt(input, weight, bias, mean, invstd)
    sd = stats_dtype(input)
    if input.numel() == 0:
        return torch.empty_like(input)
    # The C kernel beats aten for float32 and bfloat16 (AVX2/AVX-512). For
    # float16 (no vectorized half conversion in it) aten's one-pass
    # x*scale + shift is 3-4x faster, so the C kernel takes float16 only where
    # aten would need (x - mean) in more passes (a mean too large to fold).
    if sd is torch.float32 and not (input.dtype is torch.float16 and can_fold_mean(mean, invstd, input.dtype)):
        fast = cpu_fast.elemt(input, weight, bias, mean, invstd)
        if fast is not None:
            return fast
    fold = can_fold_mean(mean, invstd, input.dtype)
    scale = invstd.to(sd) if weight is None else invstd.to(sd) * weight.to(sd)
    offset = bias.to(sd) if bias is not None else torch.zeros(c, dtype=sd)
    if fold:
        zero, one = _unit_stats(c, sd)
        return F.batch_norm(input, zero, one, scale, offset - mean.to(sd) * scale, False, 0.0, 0.0)
    xmu = input - _per_channel(mean.to(sd), input)
    return torch.addcmul(_per_channel(offset, input), xmu, _per_channel(scale, input)).to(input.dtype)


def batch_norm_backward_reduce(grad_out, input, mean, invstd, weight, input_g, weight_g, bias_g):
    c = checks.validate_backward_reduce(grad_out, input, mean, invstd, weight)
    sd = stats_dtype(input)
    wd = weight.dtype if weight is not None else sd
    if input.numel() != 0 and sd is torch.float32:
        fast = cpu_fast.backward_reduce(grad_out, input, mean, invstd)
        if fast is not None:
            sum_dy, sum_dy_xmu, grad_weight, grad_bias = fast
            if wd is not torch.float32:
                grad_weight, grad_bias = grad_weight.to(wd), grad_bias.to(wd)
            return sum_dy, sum_dy_xmu, grad_weight, grad_bias
    if input.numel() == 0:
        sum_dy, sum_dy_xmu = torch.zeros(c, dtype=sd), torch.zeros(c, dtype=sd)
    else:
        _, one = _unit_stats(c, sd)
        _, sum_dy_xmu, sum_dy = torch.ops.aten.native_batch_norm_backward(
            grad_out, input, None, mean.to(sd), one, None, None, False, 0.0, [False, True, True]
        )
    grad_weight = (sum_dy_xmu * invstd.to(sd)).to(wd)
    grad_bias = sum_dy.to(wd, copy=True)  # outputs must not alias each other
    return sum_dy, sum_dy_xmu, grad_weight, grad_bias


def batch_norm_backward_elemt(grad_out, input, mean, invstd, weight, sum_dy, sum_dy_xmu, count):
    c = checks.validate_backward_elemt(grad_out, input, mean, invstd, weight, sum_dy, sum_dy_xmu, count)
    if input.numel() == 0:
        return torch.empty_like(input)
    sd = stats_dtype(input)
    if sd is torch.float32:
        fast = cpu_fast.backward_elemt(grad_out, input, mean, invstd, weight, sum_dy, sum_dy_xmu, float(count.sum()))
        if fast is not None:
            return fast
    a, b, shift = backward_elemt_coefficients(mean, invstd, weight, sum_dy, sum_dy_xmu, count, sd)
    # dx = a*dy + b*(x - mean) + shift per channel.
    if can_fold_mean(mean, invstd, input.dtype):
        zero, one = _unit_stats(c, sd)
        offset = shift - b * mean.to(sd)
        if input.dtype in (torch.float16, torch.bfloat16):
            # Mixed half/float32 elementwise ops are slow on CPU; batch_norm's
            # mixed-type kernel computes a*dy and b*x + offset in float32.
            return F.batch_norm(grad_out, zero, one, a, zero, False, 0.0, 0.0).add_(
                F.batch_norm(input, zero, one, b, offset, False, 0.0, 0.0)
            )
        return F.batch_norm(input, zero, one, b, offset, False, 0.0, 0.0).addcmul_(grad_out, _per_channel(a, input))
    xmu = input - _per_channel(mean.to(sd), input)
    dx = torch.addcmul(_per_channel(shift, input), xmu, _per_channel(b, input))
    dx.addcmul_(grad_out, _per_channel(a, input))
    return dx.to(input.dtype)


# Largest per-channel |mean|/std for which the elementwise kernels fold the
# mean into a per-channel offset (x*scale + offset: one pass fewer). Folding
# costs about ratio * eps of the float32/float64 compute; keep that below a few
# ulps of the input dtype.
FOLD_LIMIT = {torch.float64: 8.0, torch.float32: 8.0, torch.float16: 8.0, torch.bfloat16: 64.0}


def can_fold_mean(mean: Tensor, invstd: Tensor, dtype: torch.dtype) -> bool:
    """Whether every channel's |mean|/std is small enough to fold (the values are
    on the host in this CPU kernel, so looking costs no device sync)."""
    return bool((mean.abs() * invstd).max() <= FOLD_LIMIT[dtype])


def backward_elemt_coefficients(mean, invstd, weight, sum_dy, sum_dy_xmu, count, dtype):
    """Per-channel (a, b, shift) with dx = a*dy + b*(x - mean) + shift:
    a = invstd*w, b = -a*invstd²*sum_dy_xmu/N, shift = -a*sum_dy/N."""
    n = count.to(dtype).sum()
    s = invstd.to(dtype)
    a = s if weight is None else s * weight.to(dtype)
    b = -a * s * s * sum_dy_xmu.to(dtype) / n
    shift = -a * sum_dy.to(dtype) / n
    return a, b, shift


KERNELS = {
    "batch_norm_stats": batch_norm_stats,
    "batch_norm_gather_stats_with_counts": batch_norm_gather_stats_with_counts,
    "batch_norm_elemt": batch_norm_elemt,
    "batch_norm_backward_reduce": batch_norm_backward_reduce,
    "batch_norm_backward_elemt": batch_norm_backward_elemt,
    "batch_norm_elemt_act": act.elemt_act(batch_norm_elemt),
    "batch_norm_backward_reduce_relu": act.backward_reduce_relu(batch_norm_backward_reduce),
}

for _name, _fn in KERNELS.items():
    LIBRARY.impl(_name, _fn, "CPU")
