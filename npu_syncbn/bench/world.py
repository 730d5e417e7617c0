"""Spawning W gloo ranks on loopback that each run :func:`.measure.bench_shape`
per shape, with their cores and malloc settings; rank 0's rows come back."""
from __future__ import annotations

import contextlib
import datetime
import multiprocessing as mp
import os
import queue
import socket
import time
import traceback
from typing import Any, Dict, List, Optional, Tuple

from .measure import bench_shape

# glibc malloc: buffers below 32 MiB come from the heap, and up to 1 GiB of
# freed heap stays mapped, so per-step activations reuse resident pages.
MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


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
            out = [bench_shape(tuple(shape), cfg, rank, world_size) for shape in cfg["shapes"]]
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
    from ..launch import split_cores

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

