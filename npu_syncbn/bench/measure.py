"""One rank's measurements of one shape: the interleaved timed steps, the
memory kept for backward, and the result row rank 0 returns."""
from __future__ import annotations

import statistics
import time
from typing import Any, Dict, List, Sequence

from .kernels import kernel_passes, kernel_rows
from .plans import _CollectiveTrace, collective_plan, resolve_mode, ring_bytes_per_rank


def summarize(values: Sequence[float]) -> Dict[str, float]:
    """Median, quartiles and IQR of seconds, returned in milliseconds."""
    ms = sorted(v * 1e3 for v in values)
    if len(ms) == 1:
        q1 = med = q3 = ms[0]
    else:
        q1, med, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    return {"median": med, "q1": q1, "q3": q3, "iqr": q3 - q1, "min": ms[0], "max": ms[-1], "n": len(ms)}



def _layout(shape: Sequence[int], channels_last: bool) -> str:
    if channels_last and len(shape) == 4:
        return "channels_last"
    if channels_last and len(shape) == 5:
        return "channels_last_3d"
    return "contiguous"


def _local_cls(dim: int):
    import torch

    return {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}[dim]



def saved_for_backward(module, x, grad) -> Dict[str, int]:
    """Bytes of unique storages autograd keeps from ``module(x)`` for backward,
    split into the input's own storage and everything else (extra)."""
    import torch

    sizes: Dict[int, int] = {}

    def pack(t):
        try:
            st = t.untyped_storage()
            sizes[st.data_ptr()] = max(sizes.get(st.data_ptr(), 0), st.nbytes())
        except Exception:  # a tensor without storage (e.g. sparse): not counted
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = module(x)
    y.backward(grad)
    x.grad = None
    for p in module.parameters():
        p.grad = None
    input_ptr = x.untyped_storage().data_ptr()
    input_bytes = sizes.get(input_ptr, 0)
    total = sum(sizes.values())
    return {"total": total, "input": input_bytes, "extra": total - input_bytes, "tensors": len(sizes)}


def floor_seconds(read: float, copy: float) -> float:
    """The memory floor of one BatchNorm training step, from the time of one
    read pass over the activation (``x.sum()``) and of one copy of it.

    Any BatchNorm step reads the activation 6 times (forward: statistics,
    normalize; backward: the reduce over dy and x, the elementwise over dy and
    x) and writes it twice (y, dx). A copy is one read plus one write, so
    6 reads + 2 writes = 2 copies + 4 reads::

        floor = 4 * read + 2 * copy
    """
    return 4 * read + 2 * copy


def bench_shape(shape, cfg: Dict[str, Any], rank: int, world_size: int) -> Dict[str, Any]:
    import torch
    import torch.distributed as dist

    from .. import comm, shm
    from ..ops import cpu_fast
    from ..modules import SyncBatchNorm
    from ..ops.schema import stats_dtype

    dtype = getattr(torch, cfg["dtype"])
    layout = _layout(shape, cfg["channels_last"])
    fmt = {"channels_last": torch.channels_last, "channels_last_3d": torch.channels_last_3d}.get(
        layout, torch.contiguous_format
    )
    c = shape[1]
    gen = torch.Generator().manual_seed(1000 + 17 * rank)
    x = torch.randn(shape, generator=gen).to(dtype).to(memory_format=fmt).requires_grad_(True)
    grad = torch.randn(shape, generator=gen).to(dtype).to(memory_format=fmt)

    residual = torch.randn(shape, generator=gen).to(dtype).to(memory_format=fmt).requires_grad_(True)
    sink = torch.empty_like(x)  # the copy's destination

    sync = SyncBatchNorm(c, sync_mode=cfg["sync_mode"]).train()
    local = _local_cls(len(shape))(c).train()
    fused = SyncBatchNorm(c, sync_mode=cfg["sync_mode"], activation="relu").train()
    mode = resolve_mode(sync.sync_mode, world_size, x.device.type)
    pg = dist.group.WORLD
    sd = str(stats_dtype(x)).replace("torch.", "")

    waited = cpu_fast.wait_seconds if cpu_fast.library_any() is not None else (lambda: 0.0)
    sync_wait: List[float] = []  # per sync step: seconds this rank waited for the other at the rendezvous

    def step(module, forward=None, waits=None):
        x.grad = residual.grad = None
        for p in module.parameters():
            p.grad = None
        w0 = waited()
        t0 = time.perf_counter()
        y = module(x) if forward is None else forward()
        t1 = time.perf_counter()
        y.backward(grad)
        t2 = time.perf_counter()
        if waits is not None:
            waits.append(waited() - w0)
        return t1 - t0, t2 - t0

    def unfused_forward():  # what torchvision's blocks do: bn, out += identity, ReLU(inplace=True)
        y = sync(x)
        y += residual
        return torch.relu_(y)

    def timed(fn):  # the floor's passes: (0, seconds) as a step's (forward, total)
        t0 = time.perf_counter()
        fn()
        return 0.0, time.perf_counter() - t0

    source = x.detach()

    # One traced sync step (after an untraced one, so first-call work is not
    # counted): which collectives SyncBatchNorm really issues per step.
    step(sync)
    with _CollectiveTrace() as trace:
        y = sync(x)
        trace.phase = "backward"
        y.backward(grad)
    traced = trace.calls
    plan = collective_plan(c, mode, sd, x.device.type)
    plan_source = "collective_plan"
    if world_size == 1:
        plan, plan_source = [], "none (world size 1 runs local BatchNorm)"
    elif plan != traced:
        plan, plan_source = traced, f"traced; collective_plan said {plan}: update it"
    bufs = [torch.zeros(n, dtype=getattr(torch, dt)) for _, _, n, dt in plan]

    def coll_step():
        t0 = time.perf_counter()
        t1 = t0
        for (phase, kind, _, _), buf in zip(plan, bufs):
            if kind == "all_gather":
                comm.all_gather_rows(buf, pg, world_size)
            else:
                comm.all_reduce_sum(buf, pg)
            if phase == "forward":
                t1 = time.perf_counter()
        t2 = time.perf_counter()
        return t1 - t0, t2 - t0

    kinds = {"sync": lambda: step(sync, waits=sync_wait), "local": lambda: step(local), "coll": coll_step,
             "read": lambda: timed(source.sum), "copy": lambda: timed(lambda: sink.copy_(source))}
    kernels = kernel_passes(x, grad)
    for name, (call, _) in kernels.items():
        kinds["kernel:" + name] = lambda call=call: timed(call)
    if cfg.get("fused", True):
        kinds["fused"] = lambda: step(fused, lambda: fused(x, residual))
        kinds["unfused"] = lambda: step(sync, unfused_forward)
    order = list(kinds)
    for _ in range(cfg["warmup"]):
        for k in order:
            kinds[k]()

    memory = {"sync": saved_for_backward(sync, x, grad), "local": saved_for_backward(local, x, grad)}

    times = {k: {"fwd": [], "step": []} for k in kinds}
    for rep in range(cfg["reps"]):
        rotated = order[rep % len(order):] + order[: rep % len(order)]
        for k in rotated:
            dist.barrier(group=pg)
            fwd, total = kinds[k]()
            times[k]["fwd"].append(fwd)
            times[k]["step"].append(total)

    gathered: List[Any] = [None] * world_size
    del sync_wait[: len(sync_wait) - cfg["reps"]]  # (the warmup's)
    times["sync"]["wait"] = list(sync_wait)
    dist.all_gather_object(gathered, times, group=pg)
    if rank != 0:
        return {}

    def slowest(kind, part):  # per repetition: the slowest rank
        return [max(g[kind][part][i] for g in gathered) for i in range(cfg["reps"])]

    def slowest_rank_wait():  # per repetition: (step, wait) of the rank with the slowest sync step
        ranks = [max(gathered, key=lambda g: g["sync"]["step"][i]) for i in range(cfg["reps"])]
        return [(g["sync"]["step"][i], g["sync"]["wait"][i]) for i, g in enumerate(ranks)]

    passes = ("read", "copy") + tuple("kernel:" + k for k in kernels)
    summary = {k: {"step_ms": summarize(slowest(k, "step")), "forward_ms": summarize(slowest(k, "fwd"))}
               for k in kinds if k not in passes}
    s, l, cl = (summary[k]["step_ms"]["median"] for k in ("sync", "local", "coll"))
    read, copy = slowest("read", "step"), slowest("copy", "step")
    floor = summarize([floor_seconds(r, c) for r, c in zip(read, copy)])
    act_bytes = x.numel() * x.element_size()
    read_ms, copy_ms = summarize(read), summarize(copy)
    bytes_per = [
        {"phase": ph, "collective": kind, "numel": n, "dtype": dt, "itemsize": b.element_size(),
         "bytes": ring_bytes_per_rank(kind, n, b.element_size(), world_size)}
        for (ph, kind, n, dt), b in zip(plan, bufs)
    ]
    row = {
        "shape": list(shape),
        "dtype": cfg["dtype"],
        "layout": layout,
        "world_size": world_size,
        "threads": cfg["threads"],
        "sync_mode": mode,
        "reps": cfg["reps"],
        "warmup": cfg["warmup"],
        "sync": summary["sync"],
        "local": summary["local"],
        "collectives": summary["coll"],
        "sync_over_local": s / l,
        "sync_minus_collectives_over_local": (s - cl) / l,
        "floor_ms": floor,
        "read_ms": read_ms,
        "copy_ms": copy_ms,
        "read_GBps": act_bytes / read_ms["median"] / 1e6,
        "copy_GBps": 2 * act_bytes / copy_ms["median"] / 1e6,  # a copy reads and writes the activation
        "sync_over_floor": s / floor["median"],
        "collective_plan": bytes_per,
        "collective_plan_source": plan_source,
        "transport": "shm" if shm.channel_for(pg, world_size) is not None else "gloo",
        "bytes_per_rank": sum(b["bytes"] for b in bytes_per),
        "memory": {
            "activation_bytes": act_bytes,
            "sync_saved_bytes": memory["sync"]["total"],
            "local_saved_bytes": memory["local"]["total"],
            "sync_extra_bytes": memory["sync"]["extra"],
            "local_extra_bytes": memory["local"]["extra"],
            "sync_saved_activations": memory["sync"]["total"] / act_bytes,
            "local_saved_activations": memory["local"]["total"] / act_bytes,
            "sync_over_local_saved": memory["sync"]["total"] / max(memory["local"]["total"], 1),
        },
    }
    if "fused" in summary:
        fz, uf = summary["fused"]["step_ms"]["median"], summary["unfused"]["step_ms"]["median"]
        row.update(fused=summary["fused"], unfused=summary["unfused"], fused_over_unfused=fz / uf,
                   fused_saving_ms=uf - fz)
    if kernels:
        per = kernel_rows({k: summarize(slowest("kernel:" + k, "step")) for k in kernels}, act_bytes, row["copy_GBps"])
        total = sum(r["ms"]["median"] for r in per.values())
        pairs = slowest_rank_wait()
        wait = summarize([w for _, w in pairs])
        # The rest per repetition (step - wait), then its median: the waits are
        # bimodal under load (none, or a time slice), medians of the two parts
        # would not add up.
        rest = summarize([st - w for st, w in pairs])["median"] - total
        row.update(kernels=per, kernels_ms=total, kernels_over_floor=total / floor["median"],
                   step_beyond_kernels_ms=s - total, sync_wait_ms=wait, step_beyond_kernels_and_wait_ms=rest)
    return row
