"""The eager CPU step over the shared-memory channel: SyncBatchNormFunction's
forward, and its backward, each as one C call (op_kernels/cpu/sync_step.cpp).

Why: on a small layer (256x1024, local step ~0.6 ms on 2 cores) the op-by-op
path spent about as long in Python, dispatch and tensor bookkeeping (five
custom ops with their checks, the row built with torch.cat and torch.stack,
the channel's header writes) as local BatchNorm spends on its whole step.
Here the kernels write straight into this rank's slot of the channel
(shm.py) and read straight from every rank's:

* forward: stats -> own slot [fingerprint | mean | invstd | count] ->
  rendezvous -> fingerprint compare -> merge + running stats from all
  slots -> elemt (with the residual add and ReLU of ``activation="relu"``
  in its epilogue);
* backward: reduce (through a ReLU: dy masked by the saved output, the
  masked gradient written in the same pass) -> own slot [sum_dy |
  sum_dy_xmu] -> rendezvous -> rank-order sum -> backward elemt.

Same kernels, row layout, payload sizes and dtype, and the same rank-order
float32 sum as the op path over the channel: the results are bitwise those
of the op path, and ranks may mix the two paths (one rank's gradient in
another layout) without the channel going out of step.

Each function returns None (nothing done, nothing sent) when the step is not
one it takes, and the op path runs instead: torch.compile, torch.jit.trace,
a dispatch mode (profilers, recorders and make_fx see the ops), no channel (gloo transport), the
allreduce sync mode, a tensor momentum (cumulative average), the strict
fingerprint check, dtypes or layouts the C kernels do not take (float16
included: its elemt differs between the paths), parameters, buffers or
saved statistics that are not float32 and contiguous, or rows larger than a slot.
"""
from __future__ import annotations

import ctypes
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import fingerprint, shm
from .ops import cpu_fast

FP = len(fingerprint.FIELDS)  # fingerprint values leading the forward row
_INPUT_DTYPES = (torch.float32, torch.bfloat16)
_PLAIN = (Tensor, torch.nn.Parameter)  # not subclasses such as FakeTensor: C reads their memory

# nsb_sync_forward / nsb_sync_backward results (op_kernels/cpu/sync_step.cpp)
DONE, TIMEOUT, MISMATCH, FINGERPRINT, FAILED_BEFORE, FAILED_AFTER = 0, 1, 2, 3, -1, -2
_EXCHANGE_OUTCOME = {DONE: shm.ARRIVED, FINGERPRINT: shm.ARRIVED, FAILED_AFTER: shm.ARRIVED, MISMATCH: shm.MISMATCH}
_detail = ctypes.c_int64(0)  # receives the missing rank of a TIMEOUT
_DETAIL = ctypes.addressof(_detail)


def forward_payload(c: int) -> int:
    """float32 values each rank sends in the forward exchange: one row."""
    return FP + 2 * c + 1


def backward_payload(c: int) -> int:
    """float32 values each rank sends in the backward exchange: [sum_dy | sum_dy_xmu]."""
    return 2 * c


def _ptr(t: Optional[Tensor]):
    return None if t is None else t.data_ptr()


def _setup(input: Tensor, plan, payload_floats: int, vectors: Sequence[Optional[Tensor]]):
    """(library, channel, layout) when this step runs fused, else None.
    Cheapest tests first: this runs twice in every step."""
    if plan.group is None or not input.is_cpu or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return None  # graphs must record the ops, which a C call bypasses
    if input.dtype not in _INPUT_DTYPES or type(input) not in _PLAIN:
        return None
    for t in vectors:  # float32 contiguous vectors (or None)
        if t is not None and (type(t) not in _PLAIN or t.dtype is not torch.float32 or not t.is_contiguous()):
            return None
    if torch._C._len_torch_dispatch_stack():  # a dispatch mode (profiler, recorder, make_fx) must see the ops
        return None
    lib = cpu_fast.library()
    if lib is None or payload_floats * 4 > shm.SLOT_BYTES:
        return None
    lay = cpu_fast.layout(input)
    if lay is None:
        return None
    channel = shm.channel_for(plan.group, plan.world_size)  # (comm.shm_channel without its repeated checks)
    return None if channel is None else (lib, channel, lay)


def _kernel_failed(what: str) -> MemoryError:
    # The arguments were checked by _setup: the kernels fail only when their
    # O(C) scratch allocation does.
    return MemoryError(f"npu_syncbn: the fused CPU {what} could not allocate its O(C) scratch memory")


def _settle(channel: shm.ShmChannel, k: int, rc: int, what: str) -> None:
    """Record collective k on the channel; raise for every result but DONE and FINGERPRINT."""
    if rc == FAILED_BEFORE:
        raise _kernel_failed(what)  # nothing was published: the channel stays in step
    channel.settle(k, _detail.value if rc == TIMEOUT else _EXCHANGE_OUTCOME[rc])  # raises on TIMEOUT, MISMATCH
    if rc == FAILED_AFTER:
        raise _kernel_failed(what)


def _same_layout(t: Optional[Tensor], input: Tensor, lay) -> bool:
    """``t`` (a residual, gradient or saved output) is None or what the kernels read as ``input``."""
    return t is None or (t.dtype == input.dtype and type(t) in _PLAIN and cpu_fast.layout(t) == lay)


def forward(input: Tensor, weight, bias, running_mean, running_var, eps: float, momentum, plan,
            verify: bool, residual: Optional[Tensor] = None,
            relu: bool = False) -> Optional[Tuple[Tensor, Tensor, Tensor, Tensor]]:
    """(output, mean, invstd, counts (W,)) of an allgather-mode forward with
    a float momentum, or None; output = act(bn(x) + residual) with act ReLU
    when ``relu``. Raises shm.ChannelError when the exchange fails,
    FingerprintMismatch when ``verify`` and the ranks disagree."""
    if plan.mode != "allgather" or isinstance(momentum, Tensor):
        return None
    c = input.shape[1]
    ready = _setup(input, plan, forward_payload(c), (weight, bias, running_mean, running_var))
    if ready is None or not _same_layout(residual, input, ready[2]):
        return None
    lib, channel, (kind, n, cc, l) = ready
    output = torch.empty_like(input)
    mean = torch.empty(c, dtype=torch.float32)
    invstd = torch.empty(c, dtype=torch.float32)
    counts = torch.empty(plan.world_size, dtype=torch.float32)
    k = channel.next_collective()
    rc = lib.nsb_sync_forward(input.data_ptr(), output.data_ptr(), cpu_fast.DTYPE_CODES[input.dtype], kind, n, cc, l,
                              float(eps), _ptr(weight), _ptr(bias), _ptr(running_mean), _ptr(running_var),
                              float(momentum), *plan.fingerprint.values(), int(verify), *channel.geometry(),
                              plan.rank, plan.world_size, k, channel.timeout_s, mean.data_ptr(), invstd.data_ptr(),
                              counts.data_ptr(), _ptr(residual), int(relu), torch.get_num_threads(), _DETAIL)
    _settle(channel, k, rc, "forward")
    if rc == FINGERPRINT:
        fps = torch.from_numpy(channel.floats(k % 2)[:, :FP].copy())
        raise fingerprint.mismatch_error(plan.layer_label, plan.group_label, fps, plan.rank)
    return output, mean, invstd, counts


def backward(grad_output: Tensor, input: Tensor, mean: Tensor, invstd: Tensor, weight: Optional[Tensor],
             counts: Tensor, plan, output: Optional[Tensor] = None) -> Optional[Tuple[Tensor, Tensor, Tensor, Tensor]]:
    """(grad_input, grad_weight, grad_bias, grad_sum) for a step whose input
    needs a gradient, or None. ``output``: the saved output of a ReLU step,
    whose mask turns dy into grad_sum, the gradient of bn(x) + residual
    (written by the reduce pass, then read by the elementwise one); else
    grad_sum is grad_output. Raises shm.ChannelError when the exchange fails."""
    c = input.shape[1]
    ready = _setup(input, plan, backward_payload(c), (weight, mean, invstd))
    if ready is None or not all(_same_layout(t, input, ready[2]) for t in (grad_output, output)):
        return None
    lib, channel, (kind, n, cc, l) = ready
    grad_sum = grad_output if output is None else torch.empty_like(input)
    grad_input = torch.empty_like(input)
    grad_weight = torch.empty(c, dtype=torch.float32)
    grad_bias = torch.empty(c, dtype=torch.float32)
    k = channel.next_collective()
    rc = lib.nsb_sync_backward(grad_output.data_ptr(), input.data_ptr(), grad_input.data_ptr(),
                               cpu_fast.DTYPE_CODES[input.dtype], kind, n, cc, l, mean.data_ptr(), invstd.data_ptr(),
                               _ptr(weight), float(counts.sum()), *channel.geometry(), plan.rank, plan.world_size,
                               k, channel.timeout_s, grad_weight.data_ptr(), grad_bias.data_ptr(), _ptr(output),
                               None if output is None else grad_sum.data_ptr(), torch.get_num_threads(), _DETAIL)
    _settle(channel, k, rc, "backward")
    return grad_input, grad_weight, grad_bias, grad_sum
