"""Benchmark of SyncBatchNorm against local BatchNorm and the bare collectives.

Usage (console script ``npu-syncbn-bench``)::

    python -m npu_syncbn.bench                              # default shapes, 2 gloo ranks
    python -m npu_syncbn.bench --shape 16,64,56,56 --channels-last --dtype bfloat16
    python -m npu_syncbn.bench --json out.json --plot scaling.png   # plot needs pip install .[plot]

The parent process spawns W ranks (gloo on loopback, ``--threads`` torch
threads each, default 1 so that ranks do not fight over cores). On every rank
and for every shape, one run interleaves R repetitions of three timed steps,
in a rotating order so that drift (other load, thermal, caches) hits all
three alike:

* ``sync``: ``npu_syncbn.SyncBatchNorm`` in training mode, forward + ``y.backward(grad)``
  with an input that requires grad;
* ``local``: ``torch.nn.BatchNorm1d/2d/3d`` (by input rank) on the same per-rank shard;
* ``coll``: the bare collectives of the sizes SyncBatchNorm issues per step
  (see :func:`collective_plan`), through the same ``npu_syncbn.comm`` calls,
  hence over the same transport (the shared-memory channel or gloo, see
  npu_syncbn/shm.py). Over the channel SyncBatchNorm's eager step runs fused
  (npu_syncbn/cpu_step.py: the rendezvous happens inside one C call), while
  these go through the channel's Python collectives, about 10-20 us more
  each on the 2-core VM: (sync - coll) errs low by that much (~0.03 of a
  256x1024 local step).

A barrier (not timed) precedes every timed step. A repetition's time is the
largest over ranks (the step time of the slowest rank); the tables give the
median and the inter-quartile range (IQR) over repetitions, and the ratios
sync/local and (sync - coll)/local, i.e. what SyncBatchNorm costs beyond
communication, against a local BatchNorm baseline measured in the same run.
Timings are never asserted anywhere: they depend on the machine and its load.

With ``--bind-cores`` rank i is pinned to its share of the cores, as
``npu-syncbn-run --bind_core=True`` does. Not the default: on the 2-core VM
this was written on, pinning made SyncBatchNorm's step faster (fewer
migrations: 32x256x14x14 channels_last 8.4 -> 5.3 ms) but the bare
collectives right after a barrier slower (1.0 -> 2.7 ms; a halted vCPU must
be woken for every message), which would flatter (sync - coll)/local.

The ranks run with glibc malloc's mmap and trim thresholds raised
(:data:`MALLOC_TUNING`, unless the variables are already set, or with
``--no-malloc-tuning``): with the defaults, freeing an activation-sized
buffer can hand its pages back to the kernel, and the next step page-faults
them in again. On a 2-core VM that doubled both local BatchNorm and
SyncBatchNorm step times at random and drowned the ratios in noise. The
same variables speed up real CPU training (see the README).

Bytes sent per rank per step come from a ring model, not a measurement
(see :func:`ring_bytes_per_rank`). Memory kept for backward is measured with
``torch.autograd.graph.saved_tensors_hooks`` (unique storages, in bytes and in
units of the input activation's size).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import multiprocessing as mp
import os
import queue
import socket
import statistics
import sys
import time
import traceback
from typing import Any, Dict, List, Optional, Sequence, Tuple

DEFAULT_SHAPES: Tuple[Tuple[int, ...], ...] = ((16, 64, 56, 56), (32, 256, 14, 14), (256, 1024))
DTYPES = ("float32", "float16", "bfloat16", "float64")
SYNC_MODES = ("allgather", "allreduce", "auto")
PLOT_WORLD_SIZES = (1, 2, 4, 8)
# glibc malloc: buffers below 32 MiB come from the heap, and up to 1 GiB of
# freed heap stays mapped, so per-step activations reuse resident pages.
MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
PLOT_INSTALL_HINT = "pip install .[plot]  (or: pip install matplotlib)"

BYTES_MODEL = (
    "bytes/rank: ring model, not measured: all_gather of K values per rank sends "
    "(W-1)/W * W*K = (W-1)*K values per rank; all_reduce of K values (reduce-scatter + "
    "all-gather) sends 2*(W-1)/W*K values per rank; 0 for W=1"
)


# --------------------------------------------------------------------------- model
def resolve_mode(sync_mode: str, world_size: int, device_type: str = "cpu") -> str:
    """The forward mode SyncBatchNorm runs with ("auto" resolved)."""
    import torch

    from .modules import resolve_sync_mode

    return resolve_sync_mode(sync_mode, world_size, torch.device(device_type))


def fingerprint_check_enabled(device_type: str = "cpu") -> bool:
    """Whether SyncBatchNorm runs its fixed-size fingerprint all_reduce before
    the statistics collective in the steps the bench times (check level
    "strict" after a layer's first call, see function.check_level)."""
    import torch

    from . import function

    return function.check_level(torch.device(device_type), first_call=False) == "strict"


def collective_plan(
    c: int, mode: str, stats_dtype: str = "float32", device_type: str = "cpu", fingerprint_check: Optional[bool] = None
) -> List[Tuple[str, str, int, str]]:
    """The collectives SyncBatchNorm issues per training step for C channels
    in forward ``mode`` ("allgather" or "allreduce", see :func:`resolve_mode`):
    a list of (phase, collective, values per rank, dtype name), in call order.

    This is the one place to update when npu_syncbn/function.py changes what it
    sends; the benchmark checks it against one traced step (and replays the
    traced collectives, saying so) when they disagree. Currently:

    * forward, when fingerprints are checked (on CPU a layer's first call by
      default, every call with NPU_SYNCBN_CHECK=strict): all_reduce of
      [f | f²] = 2 int64 values (function.start_agreement_check);
    * forward, allgather: all_gather of [fingerprint (4) | mean (C) | invstd (C) | count (1)]
      = 2C + 5 values in the stats dtype;
    * forward, allreduce: all_reduce of [check (2) | n (1) | n·(m−s) (C) | M2 + n·(m−s)² (C)]
      = 2C + 3 values, float64 on CPU (the stats dtype on accelerators);
    * backward: all_reduce of [sum_dy (C) | sum_dy_xmu (C)] = 2C values in the stats dtype.
    """
    if fingerprint_check is None:
        fingerprint_check = fingerprint_check_enabled(device_type)
    plan = [("forward", "all_reduce", 2, "int64")] if fingerprint_check else []
    if mode == "allgather":
        plan.append(("forward", "all_gather", 2 * c + 5, stats_dtype))
    elif mode == "allreduce":
        plan.append(("forward", "all_reduce", 2 * c + 3, "float64" if device_type == "cpu" else stats_dtype))
    else:
        raise ValueError(f"unknown sync mode {mode!r}")
    plan.append(("backward", "all_reduce", 2 * c, stats_dtype))
    return plan


def modelled_bytes_per_rank(c: int, mode: str, stats_dtype: str, world_size: int, device_type: str = "cpu") -> float:
    """Bytes one rank sends per step in ``mode`` (ring model of :func:`collective_plan`)."""
    import torch

    return sum(
        ring_bytes_per_rank(kind, n, torch.empty(0, dtype=getattr(torch, dt)).element_size(), world_size)
        for _, kind, n, dt in collective_plan(c, mode, stats_dtype, device_type)
    )


def ring_bytes_per_rank(collective: str, numel: int, itemsize: int, world_size: int) -> float:
    """Bytes one rank sends for one collective under the ring model.

    all_gather, K values per rank: each rank forwards W-1 blocks of K values,
    i.e. (W-1)/W of the W*K gathered values: (W-1)*K*itemsize.
    all_reduce of K values: ring reduce-scatter then ring all-gather, each
    sending (W-1)/W*K values: 2*(W-1)/W*K*itemsize.
    (gloo picks its own algorithms; this is the textbook lower bound.)
    """
    w = world_size
    if w <= 1:
        return 0.0
    if collective == "all_gather":
        return float((w - 1) * numel * itemsize)
    if collective == "all_reduce":
        return 2.0 * (w - 1) / w * numel * itemsize
    raise ValueError(f"unknown collective {collective!r}")


# --------------------------------------------------------------------------- arguments
def parse_shape(text: str) -> Tuple[int, ...]:
    """'16,64,56,56' -> (16, 64, 56, 56): 2 to 5 positive ints (N, C, *)."""
    parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of ints like 16,64,56,56") from None
    if not 2 <= len(shape) <= 5:
        raise argparse.ArgumentTypeError(
            f"{text!r} has {len(shape)} dim(s); need N,C[,L[,H,W[,D]]] with 2 to 5 dims, e.g. 16,64,56,56 or 256,1024"
        )
    if any(s < 1 for s in shape):
        raise argparse.ArgumentTypeError(f"{text!r}: every dim must be >= 1")
    return shape


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an int") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="npu-syncbn-bench",
        description="Time npu_syncbn.SyncBatchNorm (forward+backward, training) against local BatchNorm "
        "and the bare collectives, on W gloo ranks over loopback.",
    )
    p.add_argument("--shape", action="append", type=parse_shape, metavar="N,C[,*]",
                   help="per-rank input shape, repeatable (default: 16,64,56,56 32,256,14,14 256,1024)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="input dtype (default float32)")
    p.add_argument("--channels-last", action="store_true",
                   help="channels_last (4-D) / channels_last_3d (5-D) input and gradient; 2-D/3-D stay contiguous")
    p.add_argument("--world-size", type=_int_at_least(1), default=2, help="number of gloo ranks (default 2)")
    p.add_argument("--threads", type=_int_at_least(1), default=1, help="torch threads per rank (default 1)")
    p.add_argument("--sync-mode", choices=SYNC_MODES, default="auto",
                   help="SyncBatchNorm(sync_mode=...) (default auto: the mode sending fewer bytes per rank)")
    p.add_argument("--reps", type=_int_at_least(1), default=30, help="timed repetitions per shape (default 30)")
    p.add_argument("--warmup", type=_int_at_least(0), default=5, help="untimed repetitions first (default 5)")
    p.add_argument("--json", metavar="PATH", help="write every number to this JSON file")
    p.add_argument("--plot", metavar="PNG",
                   help=f"also run the first shape at world sizes {','.join(map(str, PLOT_WORLD_SIZES))} and plot "
                   f"step time and bytes/rank against world size (needs matplotlib: {PLOT_INSTALL_HINT})")
    p.add_argument("--plot-reps", type=_int_at_least(1), default=5,
                   help="repetitions per world size for --plot (default 5: world 8 is slow on few cores)")
    p.add_argument("--bind-cores", action="store_true",
                   help="pin rank i to its share of the cores, as npu-syncbn-run --bind_core=True does "
                        "(only when every rank can have --threads cores of its own)")
    p.add_argument("--no-malloc-tuning", dest="malloc_tuning", action="store_false",
                   help="run the ranks with glibc malloc's defaults (see MALLOC_TUNING; by default the bench "
                        "sets those variables for its ranks unless they are set already)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds before a run of W ranks is abandoned (default 1800)")
    return p


# --------------------------------------------------------------------------- statistics
def summarize(values: Sequence[float]) -> Dict[str, float]:
    """Median, quartiles and IQR of seconds, returned in milliseconds."""
    ms = sorted(v * 1e3 for v in values)
    if len(ms) == 1:
        q1 = med = q3 = ms[0]
    else:
        q1, med, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    return {"median": med, "q1": q1, "q3": q3, "iqr": q3 - q1, "min": ms[0], "max": ms[-1], "n": len(ms)}


# --------------------------------------------------------------------------- per-rank work
def _layout(shape: Sequence[int], channels_last: bool) -> str:
    if channels_last and len(shape) == 4:
        return "channels_last"
    if channels_last and len(shape) == 5:
        return "channels_last_3d"
    return "contiguous"


def _local_cls(dim: int):
    import torch

    return {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}[dim]


class _CollectiveTrace:
    """Records (phase, collective, numel, dtype) of the collectives issued
    inside the block: those of npu_syncbn.comm (whatever carries them: gloo or
    the shared-memory channel) and those of the fused CPU step (cpu_step.py,
    which exchanges over the channel from C); set ``phase`` as the step goes on."""

    NAMES = {"all_gather_rows": "all_gather", "all_reduce_sum": "all_reduce", "all_reduce_sum_start": "all_reduce"}
    # cpu_step function -> (collective, float32 values it sends for C channels, position of the input argument)
    FUSED = {"forward": ("all_gather", "forward_payload", 0), "backward": ("all_reduce", "backward_payload", 1)}

    def __init__(self) -> None:
        self.calls: List[Tuple[str, str, int, str]] = []
        self.phase = "forward"

    def _wrap(self, original, kind):
        def wrapper(buf, *args, **kwargs):
            self.calls.append((self.phase, kind, buf.numel(), str(buf.dtype).replace("torch.", "")))
            return original(buf, *args, **kwargs)

        return wrapper

    def _wrap_fused(self, original, kind, payload, input_at):
        def wrapper(*args, **kwargs):
            result = original(*args, **kwargs)
            if result is not None:  # the step ran fused: it sent one payload of float32
                self.calls.append((self.phase, kind, payload(args[input_at].shape[1]), "float32"))
            return result

        return wrapper

    def __enter__(self):
        from . import comm, cpu_step

        self._saved = [(comm, name, getattr(comm, name)) for name in self.NAMES]
        self._saved += [(cpu_step, name, getattr(cpu_step, name)) for name in self.FUSED]
        for name, kind in self.NAMES.items():
            setattr(comm, name, self._wrap(getattr(comm, name), kind))
        for name, (kind, payload, input_at) in self.FUSED.items():
            setattr(cpu_step, name, self._wrap_fused(getattr(cpu_step, name), kind, getattr(cpu_step, payload), input_at))
        return self

    def __exit__(self, *exc):
        for owner, name, original in self._saved:
            setattr(owner, name, original)
        return False


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


def _bench_shape(shape, cfg: Dict[str, Any], rank: int, world_size: int) -> Dict[str, Any]:
    import torch
    import torch.distributed as dist

    from . import comm, shm
    from .modules import SyncBatchNorm
    from .ops.schema import stats_dtype

    dtype = getattr(torch, cfg["dtype"])
    layout = _layout(shape, cfg["channels_last"])
    fmt = {"channels_last": torch.channels_last, "channels_last_3d": torch.channels_last_3d}.get(
        layout, torch.contiguous_format
    )
    c = shape[1]
    gen = torch.Generator().manual_seed(1000 + 17 * rank)
    x = torch.randn(shape, generator=gen).to(dtype).to(memory_format=fmt).requires_grad_(True)
    grad = torch.randn(shape, generator=gen).to(dtype).to(memory_format=fmt)

    sync = SyncBatchNorm(c, sync_mode=cfg["sync_mode"]).train()
    local = _local_cls(len(shape))(c).train()
    mode = resolve_mode(sync.sync_mode, world_size, x.device.type)
    pg = dist.group.WORLD
    sd = str(stats_dtype(x)).replace("torch.", "")

    def step(module):
        x.grad = None
        for p in module.parameters():
            p.grad = None
        t0 = time.perf_counter()
        y = module(x)
        t1 = time.perf_counter()
        y.backward(grad)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t0

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

    kinds = {"sync": lambda: step(sync), "local": lambda: step(local), "coll": coll_step}
    order = list(kinds)
    for _ in range(cfg["warmup"]):
        for k in order:
            kinds[k]()

    memory = {"sync": saved_for_backward(sync, x, grad), "local": saved_for_backward(local, x, grad)}

    times = {k: {"fwd": [], "step": []} for k in kinds}
    for rep in range(cfg["reps"]):
        rotated = order[rep % 3:] + order[: rep % 3]
        for k in rotated:
            dist.barrier(group=pg)
            fwd, total = kinds[k]()
            times[k]["fwd"].append(fwd)
            times[k]["step"].append(total)

    gathered: List[Any] = [None] * world_size
    dist.all_gather_object(gathered, times, group=pg)
    if rank != 0:
        return {}

    def slowest(kind, part):  # per repetition: the slowest rank
        return [max(g[kind][part][i] for g in gathered) for i in range(cfg["reps"])]

    summary = {k: {"step_ms": summarize(slowest(k, "step")), "forward_ms": summarize(slowest(k, "fwd"))} for k in kinds}
    s, l, cl = (summary[k]["step_ms"]["median"] for k in ("sync", "local", "coll"))
    bytes_per = [
        {"phase": ph, "collective": kind, "numel": n, "dtype": dt, "itemsize": b.element_size(),
         "bytes": ring_bytes_per_rank(kind, n, b.element_size(), world_size)}
        for (ph, kind, n, dt), b in zip(plan, bufs)
    ]
    act_bytes = x.numel() * x.element_size()
    return {
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


def _rank_main(rank: int, world_size: int, port: int, cfg: Dict[str, Any], results) -> None:
    try:
        groups = cfg.get("core_groups")
        if groups:
            os.sched_setaffinity(0, groups[rank])
        import torch

        torch.set_num_threads(cfg["threads"])
        import torch.distributed as dist

        import npu_syncbn  # noqa: F401  (registers the ops)

        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
            timeout=datetime.timedelta(seconds=cfg["timeout"]),
        )
        try:
            out = [_bench_shape(tuple(shape), cfg, rank, world_size) for shape in cfg["shapes"]]
        finally:
            dist.destroy_process_group()
        results.put((rank, True, out if rank == 0 else None))
    except BaseException:
        results.put((rank, False, traceback.format_exc()))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def core_groups(bind: bool, world_size: int, threads: int) -> Optional[List[List[int]]]:
    """The cores each rank is pinned to (launch.split_cores of this process's
    affinity set), or None: not asked, no affinity API, or fewer cores than
    world_size * threads (pinning would then stack ranks on shared cores)."""
    if not bind or not hasattr(os, "sched_getaffinity"):
        return None
    from .launch import split_cores

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < world_size * threads:
        return None
    return split_cores(cores, world_size)


def rank_environment(malloc_tuning: bool) -> Dict[str, str]:
    """Variables the ranks start with beyond the parent's: :data:`MALLOC_TUNING`
    minus any the user set already (empty without tuning)."""
    if not malloc_tuning:
        return {}
    return {k: v for k, v in MALLOC_TUNING.items() if k not in os.environ}


@contextlib.contextmanager
def _rank_environment(extra: Dict[str, str]):
    # Spawned children copy os.environ at start, and glibc reads these at exec.
    os.environ.update(extra)
    try:
        yield
    finally:
        for k in extra:
            os.environ.pop(k, None)


def run_world(cfg: Dict[str, Any], world_size: int) -> List[Dict[str, Any]]:
    """Spawn ``world_size`` ranks that benchmark every shape in ``cfg``; rank 0's results."""
    cfg = dict(cfg, core_groups=core_groups(cfg.get("bind_cores", False), world_size, cfg["threads"]))
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world_size, port, cfg, results), daemon=True)
             for r in range(world_size)]
    with _rank_environment(rank_environment(cfg.get("malloc_tuning", True))):
        for p in procs:
            p.start()
    answers: Dict[int, Tuple[bool, Any]] = {}
    deadline = time.monotonic() + cfg["timeout"]
    try:
        while len(answers) < world_size:
            try:
                rank, ok, value = results.get(timeout=1.0)
                answers[rank] = (ok, value)
                if not ok:
                    break
            except queue.Empty:
                dead = [r for r, p in enumerate(procs) if p.exitcode is not None and r not in answers]
                if dead:
                    time.sleep(0.5)  # let a last message arrive
                    while not results.empty():
                        rank, ok, value = results.get_nowait()
                        answers[rank] = (ok, value)
                    dead = [r for r in dead if r not in answers]
                    if dead:
                        raise RuntimeError(f"rank(s) {dead} of {world_size} died (exit codes "
                                           f"{[procs[r].exitcode for r in dead]}) without a result")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"world size {world_size}: no result after {cfg['timeout']:.0f} s (--timeout)")
    finally:
        for p in procs:
            p.join(timeout=10 if all(a[0] for a in answers.values()) and len(answers) == world_size else 0.1)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    failed = {r: v for r, (ok, v) in answers.items() if not ok}
    if failed:
        rank = min(failed)
        raise RuntimeError(f"rank {rank} of {world_size} failed:\n{failed[rank]}")
    return answers[0][1]


# --------------------------------------------------------------------------- output
COLUMNS = ("shape", "dtype", "layout", "W", "mode", "sync_ms", "local_ms", "coll_ms",
           "sync/local", "(sync-coll)/local", "bytes/rank")


def _ms(stat: Dict[str, float]) -> str:
    return f"{stat['median']:.3f}±{stat['iqr'] / 2:.3f}"


def format_table(rows: List[Dict[str, Any]]) -> str:
    lines = [[
        "x".join(map(str, r["shape"])), r["dtype"], r["layout"], str(r["world_size"]), r["sync_mode"],
        _ms(r["sync"]["step_ms"]), _ms(r["local"]["step_ms"]), _ms(r["collectives"]["step_ms"]),
        f"{r['sync_over_local']:.2f}", f"{r['sync_minus_collectives_over_local']:.2f}", f"{r['bytes_per_rank']:.0f}",
    ] for r in rows]
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(COLUMNS)]
    out = ["  ".join(h.ljust(w) for h, w in zip(COLUMNS, widths))]
    out += ["  ".join(v.rjust(w) if i >= 5 else v.ljust(w) for i, (v, w) in enumerate(zip(l, widths))) for l in lines]
    return "\n".join(out)


def format_memory(rows: List[Dict[str, Any]]) -> str:
    head = ("shape", "dtype", "layout", "activation_MiB", "sync_saved(act)", "local_saved(act)",
            "sync_extra(act)", "local_extra(act)", "sync/local_saved")
    lines = []
    for r in rows:
        m = r["memory"]
        a = m["activation_bytes"]
        lines.append(["x".join(map(str, r["shape"])), r["dtype"], r["layout"], f"{a / 2**20:.2f}",
                      f"{m['sync_saved_activations']:.3f}", f"{m['local_saved_activations']:.3f}",
                      f"{m['sync_extra_bytes'] / a:.4f}", f"{m['local_extra_bytes'] / a:.4f}",
                      f"{m['sync_over_local_saved']:.3f}"])
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out += ["  ".join(v.ljust(w) for v, w in zip(l, widths)) for l in lines]
    return "\n".join(out)


def make_plot(sweep: List[Dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = [r["world_size"] for r in sweep]
    fig, (ax_t, ax_b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label in (("sync", "SyncBatchNorm"), ("local", "local BatchNorm"), ("collectives", "bare collectives")):
        med = [r[key]["step_ms"]["median"] for r in sweep]
        lo = [r[key]["step_ms"]["median"] - r[key]["step_ms"]["q1"] for r in sweep]
        hi = [r[key]["step_ms"]["q3"] - r[key]["step_ms"]["median"] for r in sweep]
        ax_t.errorbar(ws, med, yerr=[lo, hi], marker="o", capsize=3, label=label)
    first = sweep[0]
    title = f"{'x'.join(map(str, first['shape']))} {first['dtype']} {first['layout']}, per-rank shard"
    ax_t.set(xlabel="world size (gloo ranks)", ylabel="forward+backward step, ms (median, IQR)", title=title)
    ax_t.set_xscale("log", base=2)
    ax_t.set_xticks(ws, [str(w) for w in ws])
    ax_t.legend()
    ax_b.plot(ws, [r["bytes_per_rank"] for r in sweep], marker="o", label="measured run (its sync mode)")
    # Both modes from the model at the same C: allgather grows with W, allreduce does not.
    c = first["shape"][1]
    sd = "float64" if first["dtype"] == "float64" else "float32"  # the stats dtype
    for mode in ("allgather", "allreduce"):
        model = [modelled_bytes_per_rank(c, mode, sd, w) for w in ws]
        ax_b.plot(ws, model, linestyle="--", marker=".", label=f"sync_mode={mode} (model)")
    ax_b.set(xlabel="world size (gloo ranks)", ylabel="bytes sent per rank per step", title="ring model")
    ax_b.legend()
    ax_b.set_xscale("log", base=2)
    ax_b.set_xticks(ws, [str(w) for w in ws])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error(f"--plot needs matplotlib, which is not installed: {PLOT_INSTALL_HINT}")
    sync_mode = args.sync_mode
    shapes = args.shape or list(DEFAULT_SHAPES)
    cfg = {
        "shapes": [list(s) for s in shapes], "dtype": args.dtype, "channels_last": args.channels_last,
        "threads": args.threads, "sync_mode": sync_mode, "reps": args.reps, "warmup": args.warmup,
        "timeout": args.timeout, "malloc_tuning": args.malloc_tuning, "bind_cores": args.bind_cores,
    }
    import torch

    print(f"npu_syncbn bench: torch {torch.__version__}, {args.world_size} gloo rank(s) on loopback, "
          f"{args.threads} thread(s)/rank, {os.cpu_count()} CPU(s), reps {args.reps} (interleaved), warmup {args.warmup}")
    from . import shm

    print(f"CPU collectives: ${shm.ENV}={shm.mode()} "
          f"({'shared memory' if shm.wanted(args.world_size) else 'gloo'} for {args.world_size} rank(s) here)")
    tuned = rank_environment(args.malloc_tuning)
    malloc = {k: os.environ.get(k, tuned.get(k)) for k in MALLOC_TUNING}
    groups = core_groups(args.bind_cores, args.world_size, args.threads)
    print("rank cores: " + (", ".join(f"rank {r}: {g}" for r, g in enumerate(groups)) if groups else
                            "not pinned" + (" (--bind-cores to pin)" if not args.bind_cores else
                                            f" (fewer than {args.world_size * args.threads} cores available)")))
    print("rank malloc settings: " + (", ".join(f"{k}={v}" for k, v in malloc.items() if v is not None)
                                       or "glibc defaults (--no-malloc-tuning)"))
    print("times: forward+backward per step in ms, median±IQR/2 over repetitions of the slowest rank; "
          "coll = the bare collectives of the same sizes")
    t0 = time.monotonic()
    try:
        rows = run_world(cfg, args.world_size)
    except RuntimeError as exc:
        print(f"npu-syncbn-bench: error: {exc}", file=sys.stderr)
        return 1
    print(format_table(rows))
    print(BYTES_MODEL)
    for r in rows:
        plan = ", ".join(f"{p['phase']} {p['collective']} of {p['numel']} {p['dtype']}" for p in r["collective_plan"])
        print(f"  {'x'.join(map(str, r['shape']))}: {plan} ({r['collective_plan_source']}; over {r['transport']})")
    print("memory kept for backward (unique storages saved by autograd; act = one input activation):")
    print(format_memory(rows))
    report: Dict[str, Any] = {
        "config": {k: v for k, v in cfg.items()} | {"world_size": args.world_size, "torch": torch.__version__,
                                                   "cpu_count": os.cpu_count()},
        "bytes_model": BYTES_MODEL,
        "timing_model": "per repetition the slowest rank's time; median/q1/q3/iqr over repetitions, milliseconds",
        "results": rows,
    }
    if args.plot:
        plot_cfg = dict(cfg, shapes=[list(shapes[0])], reps=args.plot_reps, warmup=min(args.warmup, 2))
        sweep = []
        for w in PLOT_WORLD_SIZES:
            try:
                sweep += run_world(plot_cfg, w)
            except RuntimeError as exc:
                print(f"npu-syncbn-bench: error: --plot at world size {w}: {exc}", file=sys.stderr)
                return 1
        print(f"scaling of {'x'.join(map(str, shapes[0]))} with world size ({args.plot_reps} reps each):")
        print(format_table(sweep))
        make_plot(sweep, args.plot)
        report["sweep"] = sweep
        print(f"plot written to {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"json written to {args.json}")
    print(f"total {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
