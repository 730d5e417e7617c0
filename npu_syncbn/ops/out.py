"""The ``.out`` overloads of the five ops, as aten has them.

aten defines ``batch_norm_stats.out``, ``batch_norm_gather_stats_with_counts.out``,
``batch_norm_elemt.out``, ``batch_norm_backward_reduce.out`` and
``batch_norm_backward_elemt.out`` (see ``torch.ops.aten.<op>.overloads()``),
so code written for aten may call ``torch.ops.npu_syncbn.batch_norm_elemt(...,
out=t)``. Each overload here takes the functional op's arguments plus
keyword-only outputs (``out0``, ``out1``, ... or ``out``, as aten names them)
and returns those outputs.

Semantics are those of aten's generated out= kernels:

* the functional op computes the result (on CPU, the NPU or a fake tensor:
  the same dispatch, so the same kernel and the same argument checks);
* each output is resized to the result's shape as ``at::native::resize_output``
  does: silently when it already has that shape or has no elements, with a
  UserWarning when a non-empty output of another shape is resized;
* the result is copied in (``copy_``: an output of another float dtype
  receives the cast value); an output on another device than the input is
  rejected with an error naming it.

One implementation serves every device: it is registered as the ops'
CompositeImplicitAutograd kernel, so the dispatcher runs it for CPU tensors,
NPU (PrivateUse1) tensors and fake tensors alike, and it calls the
functional op, whose own kernel for that device then runs (on an NPU our
AscendC library's or the aclnn fallback; for fake tensors the fake kernel,
after which resize_ gives the fake outputs their shapes and copy_ is a no-op
on data). Being composite also lets torch.compile trace it into the
functional op plus aten's resize_/copy_, which it can functionalize: a
custom op whose outputs alias its inputs cannot be functionalized otherwise.
Under ``fullgraph=True`` an output that must be resized breaks the graph, as
it does for aten's own out= ops.
"""
from __future__ import annotations

import warnings
from typing import Sequence, Tuple

import torch
from torch import Tensor

from .schema import LIBRARY, SCHEMAS

# op -> names of its outputs in aten's .out schema (alias sets start after the
# functional schema's own: gather already uses (a!) and (b!) for the running stats).
OUT_NAMES = {
    "batch_norm_stats": ("out0", "out1"),
    "batch_norm_gather_stats_with_counts": ("out0", "out1"),
    "batch_norm_elemt": ("out",),
    "batch_norm_backward_reduce": ("out0", "out1", "out2", "out3"),
    "batch_norm_backward_elemt": ("out",),
}


def out_schema(name: str) -> str:
    """The ``.out`` schema of op ``name``: its arguments, then ``*, Tensor(x!) out...``."""
    args, _ = SCHEMAS[name].split(" -> ")
    sets = "cdef" if name == "batch_norm_gather_stats_with_counts" else "abcd"
    outs = [f"Tensor({sets[i]}!) {o}" for i, o in enumerate(OUT_NAMES[name])]
    returns = ", ".join(f"Tensor({sets[i]}!)" for i in range(len(outs)))
    return f"{args[:-1]}, *, {', '.join(outs)}) -> " + (f"({returns})" if len(outs) > 1 else returns)


def resize_output(out: Tensor, shape: Sequence[int], name: str) -> None:
    """Resize ``out`` to ``shape`` as at::native::resize_output does (warning
    when a non-empty tensor of another shape is resized)."""
    shape = tuple(shape)
    if tuple(out.shape) == shape:
        return
    if out.numel() != 0:
        warnings.warn(
            f"{name}: an output with elements was resized from shape {tuple(out.shape)} to the required "
            f"shape {shape}. aten deprecates resizing non-empty outputs; pass an output of the right shape, "
            "or one resized to zero elements with t.resize_(0)",
            UserWarning,
            stacklevel=3,
        )
    out.resize_(shape)


def _write(results: Tuple[Tensor, ...], outs: Tuple[Tensor, ...], name: str, device: torch.device):
    for label, out, result in zip(OUT_NAMES[name], outs, results):
        if not isinstance(out, Tensor):
            raise TypeError(f"{name}: {label} must be a torch.Tensor, got {type(out).__name__}")
        if out.device != device:
            raise ValueError(f"{name}: {label} must be on the input's device {device}, got {out.device}")
        resize_output(out, result.shape, f"{name}.out")
        out.copy_(result)
    return outs[0] if len(outs) == 1 else tuple(outs)


def _make(name: str):
    functional = getattr(torch.ops.npu_syncbn, name).default
    count = len(OUT_NAMES[name])

    def kernel(*args, **kwargs):
        outs = tuple(kwargs[o] for o in OUT_NAMES[name])
        result = functional(*args)
        results = (result,) if count == 1 else tuple(result)
        device = next(a.device for a in args if isinstance(a, Tensor))
        return _write(results, outs, name, device)

    kernel.__name__ = f"{name}_out"
    return kernel


# The aten-shaped five only: aten has .out forms of these; the fused
# activation's ops (not aten's) have none.
for _name in OUT_NAMES:
    LIBRARY.define(f"{_name}.out{out_schema(_name)}")
    LIBRARY.impl(f"{_name}.out", _make(_name), "CompositeImplicitAutograd")
