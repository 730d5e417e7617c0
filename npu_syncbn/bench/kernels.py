"""The four C kernels of the fused CPU step, timed alone beside the floor's
passes: where a step stands against the floor, kernel by kernel, and how
much of it is neither kernel nor floor (Python, autograd, the rendezvous)."""
from __future__ import annotations

from typing import Callable, Dict, Tuple

# kernel -> activations it moves: reads + writes (stats reads x; elemt reads x,
# writes y; the reduce reads dy and x; the backward elemt reads dy, x, writes dx)
TRAFFIC = {"stats": 1, "elemt": 2, "reduce": 2, "backward_elemt": 3}


def kernel_passes(x, grad) -> Dict[str, Tuple[Callable[[], object], int]]:
    """name -> (call, activations moved) for the C kernels on ``x`` and
    ``grad``; empty when they do not take this dtype or layout."""
    import torch

    from ..ops import cpu_fast

    src = x.detach()
    if cpu_fast.library() is None or cpu_fast.layout(src) is None or cpu_fast.layout(grad) != cpu_fast.layout(src):
        return {}
    c = src.shape[1]
    weight, bias = torch.ones(c), torch.zeros(c)
    mean, invstd = cpu_fast.stats(src, 1e-5)
    sum_dy, sum_dy_xmu, _, _ = cpu_fast.backward_reduce(grad, src, mean, invstd)
    count = float(src.numel() // c)
    calls = {
        "stats": lambda: cpu_fast.stats(src, 1e-5),
        "elemt": lambda: cpu_fast.elemt(src, weight, bias, mean, invstd),
        "reduce": lambda: cpu_fast.backward_reduce(grad, src, mean, invstd),
        "backward_elemt": lambda: cpu_fast.backward_elemt(grad, src, mean, invstd, weight, sum_dy, sum_dy_xmu, count),
    }
    return {name: (call, TRAFFIC[name]) for name, call in calls.items()}


def kernel_rows(summaries: Dict[str, Dict[str, float]], act_bytes: int, copy_gbps: float) -> Dict[str, Dict]:
    """Per kernel: its time, its bandwidth (activations moved / median time)
    and that bandwidth over the copy's (1.0: the kernel moves data as fast as
    a copy does)."""
    rows = {}
    for name, stat in summaries.items():
        gbps = TRAFFIC[name] * act_bytes / stat["median"] / 1e6
        rows[name] = {"ms": stat, "GBps": gbps, "over_copy_bandwidth": gbps / copy_gbps}
    return rows
