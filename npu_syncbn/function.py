"""The autograd Function of synchronized BatchNorm: the data flow, nothing else.

forward:  stats -> ONE collective over the group -> global stats (+ running
          stats update) -> elementwise
backward: reduce -> ONE all_reduce of [sum_dy | sum_dy_xmu] -> elementwise

The forward collective has two modes (see :class:`SyncPlan`):

* ``allgather``: every rank's [fingerprint | mean | invstd | count] row is
  gathered and merged with Chan's formula by the gather op. Exact, and sends
  (W − 1)·(2C + 5) values per rank: grows with the world size W.
* ``allreduce``: one all_reduce of [fingerprint check | n | n·(m − s) |
  M2 + n·(m − s)²] with s a per-channel shift every rank shares. On CPU the
  payload is float64 and s the running mean (else 0). Accelerators have no
  float64 all_reduce (HCCL on 910B/910_93 sums float32 at most), so there s is
  the layer's previous global batch mean, within a few std of this batch's
  whatever |mean|/std; a layer's first call, which has none, takes the
  allgather mode instead (the running mean, 0 at first and slow to follow,
  would cancel every digit of the variance when |mean| >> std). Sends about
  2·(2C + 3) values per rank whatever W.

Every rank takes part in both collectives, including a rank whose batch is
empty (count 0: it contributes nothing and gets empty outputs).

Each step runs op by op (the five ops of npu_syncbn.ops, what NPUs and
torch.compile graphs run) unless :mod:`npu_syncbn.cpu_step` takes it: in
eager mode on CPU over the shared-memory channel, it does the same
allgather-mode forward, or backward, in one C call with bitwise the same
results.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.distributed as dist
from torch import Tensor

from . import comm, cpu_step, fingerprint, ops, shm
from .ops.merge import invstd_to_var, merge_shifted_sums, shifted_sums, update_running_stats
from .ops.schema import stats_dtype

ENV_CHECK = "NPU_SYNCBN_CHECK"


@dataclass(frozen=True)
class SyncPlan:
    """Everything the Function needs to know about where and how to synchronize."""

    group: Optional[dist.ProcessGroup]  # None: world of one, no communication
    world_size: int
    rank: int
    mode: str  # "allgather" or "allreduce"
    layer_label: str
    group_spec: comm.GroupLike  # what the user passed, for error messages
    fingerprint: fingerprint.Fingerprint
    first_call: bool = True  # this layer's first synchronized call (see check_level)
    # Activation checkpointing (recompute.py): the recompute's global
    # (mean, invstd, counts) from the forward it repeats, and where a forward
    # that may be repeated leaves its own.
    reuse: Optional[tuple] = None
    keep: Optional[list] = None
    # Accelerators, eager: the allreduce mode's shift (the previous global
    # mean), and where this call leaves its global mean for the next one.
    shift: Optional[Tensor] = None
    save_shift: Optional[Tensor] = None

    @property
    def group_label(self) -> str:
        return comm.group_name_of(self.group_spec)


CHECK_LEVELS = ("auto", "strict", "buffer", "never")


def check_level(device: torch.device, first_call: bool = True) -> str:
    """How ranks verify that they synchronize the same thing ($NPU_SYNCBN_CHECK):

    * ``buffer``: compare the fingerprints that ride in the statistics buffer
      (no extra collective). Catches layers called out of order, skipped
      layers and dtype mismatches while buffer sizes agree; where sizes differ
      (another channel count at the same call) every rank raises over the
      shared-memory channel (shm.py), while gloo aborts the rank that receives
      the longer buffer ("Received data size doesn't match expected size")
      and the others raise naming the layer.
    * ``strict``: ``buffer`` plus a fixed-size fingerprint all_reduce before
      the statistics, so that ranks whose buffers would differ in size
      (different channel counts) raise cleanly instead of gloo aborting.
    * ``never``: no check.
    * ``auto`` (default): on CPU ``strict`` for a layer's first synchronized
      call (``first_call``: ranks built different models, or call layers in
      different orders, from the first step) and ``buffer`` afterwards, since
      the extra collective cost up to a third of a step on 2 cores; on
      accelerators ``never``, because reading the fingerprints is free on CPU
      but a device synchronization on an NPU.
    """
    setting = os.environ.get(ENV_CHECK, "auto")
    if setting not in CHECK_LEVELS:
        raise ValueError(f"{ENV_CHECK} must be one of {', '.join(CHECK_LEVELS)}, got {setting!r}")
    if setting == "auto":
        if device.type != "cpu":
            return "never"
        return "strict" if first_call else "buffer"
    return setting


def _collective_error(exc: Exception, plan: SyncPlan, what: str) -> RuntimeError:
    return RuntimeError(
        f"SyncBatchNorm {plan.layer_label}: the {what} collective on {plan.group_label} failed on rank "
        f"{plan.rank}: a rank died, skipped this layer, or sent a different buffer size (channel count or dtype); "
        f"the wait is bounded by the process group timeout ($NPU_SYNCBN_TIMEOUT). Cause: {exc}"
    )


@dataclass
class AgreementCheck:
    """A fixed-size fingerprint all_reduce in flight (see :func:`start_agreement_check`)."""

    summed: Tensor  # [f, f²], summed in place over the group once ``work`` is done
    expected: Tensor  # [W·f, W·f²]
    work: Optional[dist.Work]


def start_agreement_check(plan: SyncPlan, device: torch.device) -> AgreementCheck:
    """Start the fixed-size fingerprint check that precedes the statistics collective.

    The statistics buffer's length depends on C and its byte size on the stats
    dtype. Ranks that disagree on those (layers called in different orders
    with different channel counts) would send buffers of different sizes, and
    gloo then aborts the process that receives more than it expects, while the
    other receives a short buffer. This all_reduce of [f, f²] (f one integer
    summing up the fingerprint, int64 so sums are exact) has the same size on
    every rank: all ranks agree iff Σf = W·f and Σf² = W·f² on each, and on
    disagreement every rank learns it, gathers the fingerprints (also fixed
    size) and raises, so the ranks stay in step.

    It depends on nothing but the fingerprint, so forward starts it before
    computing the local statistics and the two overlap; :func:`finish_agreement_check`
    waits for it."""
    f = plan.fingerprint.scalar(1 << 20)
    check = torch.tensor([f, f * f], dtype=torch.int64, device=device)
    expected = check * plan.world_size
    try:
        work = comm.all_reduce_sum_start(check, plan.group)
    except RuntimeError as exc:
        raise _collective_error(exc, plan, "fingerprint check") from exc
    return AgreementCheck(check, expected, work)


def finish_agreement_check(plan: SyncPlan, check: AgreementCheck) -> Tensor:
    """Wait for the check and raise on disagreement (naming every rank's
    fingerprint). Returns a 0-dim int64 tensor that is 0 once the check passed
    (see forward)."""
    try:
        comm.wait(check.work)
        verified = fingerprint.verified_sums(check.summed, check.expected, plan.layer_label, plan.group_label)
        return verified[0] - check.expected[0]
    except fingerprint.FingerprintMismatch:
        try:
            rows = comm.all_gather_rows(plan.fingerprint.tensor(torch.int64, check.summed.device), plan.group, plan.world_size)
        except RuntimeError as exc:
            raise _collective_error(exc, plan, "fingerprint gather") from exc
        raise fingerprint.mismatch_error(plan.layer_label, plan.group_label, rows.cpu(), plan.rank) from None
    except RuntimeError as exc:
        raise _collective_error(exc, plan, "fingerprint check") from exc


def _gather_global_stats(input, mean, invstd, count, running_mean, running_var, eps, momentum, plan: SyncPlan, verify: bool):
    """allgather mode: returns (mean, invstd, counts (W,)). ``verify``: compare the fingerprints."""
    c = input.shape[1]
    fp = plan.fingerprint.tensor(mean.dtype, mean.device)
    k = fp.numel()
    try:
        rows = comm.all_gather_rows(torch.cat([fp, mean, invstd, count]), plan.group, plan.world_size)
    except RuntimeError as exc:
        raise _collective_error(exc, plan, "forward statistics") from exc
    if verify:
        rows = fingerprint.verified_rows(rows, fp, plan.layer_label, plan.group_label, plan.rank)
    mean_all, invstd_all, counts = rows[:, k : k + c], rows[:, k + c : k + 2 * c], rows[:, k + 2 * c]
    if isinstance(momentum, Tensor):  # cumulative average: the op takes a float momentum
        g_mean, g_invstd = ops.batch_norm_gather_stats_with_counts(input, mean_all, invstd_all, None, None, 0.0, eps, counts)
        update_running_stats(running_mean, running_var, g_mean, invstd_to_var(g_invstd, eps), counts.sum(), momentum)
        return g_mean, g_invstd, counts
    g_mean, g_invstd = ops.batch_norm_gather_stats_with_counts(
        input, mean_all, invstd_all, running_mean, running_var, momentum, eps, counts
    )
    return g_mean, g_invstd, counts


def _reduce_global_stats(input, mean, invstd, count, running_mean, running_var, eps, momentum, plan: SyncPlan, verify: bool):
    """allreduce mode: returns (mean, invstd, total count as a (1,) tensor). ``verify``: compare the fingerprints."""
    sd = mean.dtype
    # float64 payload on CPU makes even a poor shift harmless; accelerators keep
    # the stats dtype and rely on the running-mean shift.
    pd = torch.float64 if input.device.type == "cpu" else sd
    if plan.shift is not None:
        shift = plan.shift.to(pd)
    else:
        shift = (running_mean.detach() if running_mean is not None else torch.zeros_like(mean)).to(pd)
    # A NaN/Inf running mean (after one bad batch) must not poison later
    # batches, which local BatchNorm normalizes with batch statistics only.
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    f = float(plan.fingerprint.scalar(1 << 20 if pd == torch.float64 else 1 << 11))
    check = torch.tensor([f, f * f], dtype=pd, device=mean.device)
    payload = torch.cat([check, shifted_sums(mean.to(pd), invstd_to_var(invstd, eps).to(pd), count.to(pd), shift)])
    try:
        summed = comm.all_reduce_sum(payload, plan.group)
    except RuntimeError as exc:
        raise _collective_error(exc, plan, "forward statistics") from exc
    if verify:
        try:
            summed = fingerprint.verified_sums(summed, check * plan.world_size, plan.layer_label, plan.group_label)
        except fingerprint.FingerprintMismatch:
            # Every rank sees the same sums, so all get here: gather the
            # fingerprints to name the ranks (this error path only, eager only).
            rows = comm.all_gather_rows(plan.fingerprint.tensor(torch.float64, mean.device), plan.group, plan.world_size)
            raise fingerprint.mismatch_error(plan.layer_label, plan.group_label, rows.cpu(), plan.rank) from None
    c = input.shape[1]
    g_mean, g_var, total = merge_shifted_sums(summed[2], summed[3 : 3 + c], summed[3 + c :], shift)
    update_running_stats(running_mean, running_var, g_mean, g_var, total, momentum)
    return g_mean.to(sd), (g_var + eps).rsqrt().to(sd), total.reshape(1)


def activate(y: Tensor, residual: Optional[Tensor], relu: bool) -> Tensor:
    """relu(y + residual) as autograd-tracked torch ops: the paths that run
    local BatchNorm (world of one, eval mode) and finish it like the Function."""
    if residual is not None:
        y = y + residual
    return torch.relu(y) if relu else y


def _elemt(input, weight, bias, mean, invstd, eps, residual: Optional[Tensor], relu: bool) -> Tensor:
    """act(elemt(...) + residual) on the op path: the fused-activation op when
    there is anything to fuse (on NPUs one AscendC kernel; every
    implementation rounds as elemt, add, relu op by op, as the fused C step
    does), else plain elemt."""
    if residual is None and not relu:
        return ops.batch_norm_elemt(input, weight, bias, mean, invstd, eps)
    return ops.batch_norm_elemt_act(input, weight, bias, mean, invstd, eps, residual, relu)


class SyncBatchNormFunction(torch.autograd.Function):
    """y = act((x - mean) * invstd * weight + bias + residual) with mean/invstd
    over the whole group; act is the identity or ReLU, residual optional.

    Shapes: input (N, C, *), weight/bias/running stats (C,). ``momentum`` is a
    float, or a 0-dim tensor for the cumulative average (no host read).
    Weight and bias gradients are this rank's share; the data-parallel wrapper
    sums them, as with torch.nn.SyncBatchNorm.
    """

    @staticmethod
    def forward(
        ctx,
        input: Tensor,
        weight: Optional[Tensor],
        bias: Optional[Tensor],
        running_mean: Optional[Tensor],
        running_var: Optional[Tensor],
        eps: float,
        momentum: Union[float, Tensor],
        plan: SyncPlan,
        residual: Optional[Tensor] = None,
        relu: bool = False,
    ) -> Tensor:
        if plan.reuse is not None:  # a recompute: no collective, no running-stat update
            mean, invstd, counts = plan.reuse
            output = _elemt(input, weight, bias, mean, invstd, eps, residual, relu)
        else:
            output, mean, invstd, counts = _synchronized_forward(
                input, weight, bias, running_mean, running_var, eps, momentum, plan, residual, relu
            )
        if plan.keep is not None:
            plan.keep.append((mean, invstd, counts))
        # The same tensors in the same order whether recomputed or not:
        # non-reentrant checkpointing matches saved tensors by position.
        # ReLU's mask comes from the output (y > 0), so that is saved instead
        # of the pre-activation: as much as local BatchNorm + ReLU keep.
        ctx.save_for_backward(input, weight, mean, invstd, counts, *((output,) if relu else ()))
        ctx.plan = plan
        ctx.relu = relu
        return output

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        input, weight, mean, invstd, counts, *rest = ctx.saved_tensors
        output = rest[0] if ctx.relu else None
        plan: SyncPlan = ctx.plan
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        grads = None
        if need_input:  # without dx there is no collective, and nothing to fuse
            try:
                grads = cpu_step.backward(grad_output, input, mean, invstd, weight, counts, plan, output)
            except shm.ChannelError as exc:
                raise _collective_error(exc, plan, "backward gradient") from exc
        if grads is None:
            grads = _op_path_backward(grad_output, output, input, weight, mean, invstd, counts, plan,
                                      ctx.needs_input_grad[:3])
        grad_input, grad_weight, grad_bias, grad_sum = grads
        return (
            grad_input,
            grad_weight if need_weight else None,
            grad_bias if need_bias else None,
            None, None, None, None, None,
            grad_sum if ctx.needs_input_grad[8:9] == (True,) else None,  # (callers may pass 8 arguments)
            None,
        )


def _synchronized_forward(input, weight, bias, running_mean, running_var, eps, momentum, plan: SyncPlan,
                          residual=None, relu=False):
    """(output, mean, invstd, counts): the fused CPU step when it applies, else op by op."""
    level = check_level(input.device, plan.first_call)  # read once per step
    args = (input, weight, bias, running_mean, running_var, eps, momentum, plan)
    step = None
    if level != "strict":
        try:
            step = cpu_step.forward(*args, level != "never", residual, relu)
        except shm.ChannelError as exc:
            raise _collective_error(exc, plan, "forward statistics") from exc
    if step is not None:
        return step
    return _op_path_forward(*args, level, residual, relu)


def _op_path_forward(input, weight, bias, running_mean, running_var, eps, momentum, plan: SyncPlan, level: str,
                     residual: Optional[Tensor] = None, relu: bool = False):
    """The forward op by op: (output, mean, invstd, counts)."""
    c = input.shape[1]
    check = start_agreement_check(plan, input.device) if level == "strict" else None
    mean, invstd = ops.batch_norm_stats(input, eps)  # overlaps the check in flight
    count = torch.full((1,), input.numel() // c, dtype=stats_dtype(input), device=input.device)
    if check is not None:
        settled = finish_agreement_check(plan, check)
        if torch.compiler.is_compiling():
            # A graph orders collectives by data dependencies only: make the
            # statistics depend on the check (adding an exact 0) so that it
            # is neither dropped as dead code nor overtaken by the
            # statistics collective, which would abort gloo when C differs.
            mean = mean + settled.to(mean.dtype)
    merge = _gather_global_stats if plan.mode == "allgather" else _reduce_global_stats
    mean, invstd, counts = merge(input, mean, invstd, count, running_mean, running_var, eps, momentum, plan, level != "never")
    if plan.save_shift is not None:  # on the device: no host sync; a step with no data keeps the old shift
        keep = (counts.sum() > 0) & torch.isfinite(mean)
        plan.save_shift.copy_(torch.where(keep, mean.detach(), plan.save_shift))
    return _elemt(input, weight, bias, mean, invstd, eps, residual, relu), mean, invstd, counts


def _op_path_backward(grad_output, output, input, weight, mean, invstd, counts, plan: SyncPlan, needs_grad):
    """The backward op by op: (grad_input or None, grad_weight, grad_bias,
    grad_sum). ``output`` is given when the forward applied ReLU: its mask
    turns grad_output into grad_sum, the gradient of bn(x) + residual, in the
    reduce op itself (one AscendC kernel on NPUs); else grad_sum is grad_output."""
    need_input, need_weight, need_bias = needs_grad
    if output is not None:
        sum_dy, sum_dy_xmu, grad_weight, grad_bias, grad_output = ops.batch_norm_backward_reduce_relu(
            grad_output, output, input, mean, invstd, weight, need_input, need_weight, need_bias
        )
    else:
        sum_dy, sum_dy_xmu, grad_weight, grad_bias = ops.batch_norm_backward_reduce(
            grad_output, input, mean, invstd, weight, need_input, need_weight, need_bias
        )
    if not need_input:
        return None, grad_weight, grad_bias, grad_output
    c = input.shape[1]
    sums = torch.cat([sum_dy, sum_dy_xmu])
    try:
        sums = comm.all_reduce_sum(sums, plan.group)
    except RuntimeError as exc:
        raise _collective_error(exc, plan, "backward gradient") from exc
    grad_input = ops.batch_norm_backward_elemt(grad_output, input, mean, invstd, weight, sums[:c], sums[c:], counts)
    return grad_input, grad_weight, grad_bias, grad_output
