"""Multi-rank test harness: a pool of gloo ranks on loopback, reused across tests.

Starting a process and importing torch costs seconds on a 2-core machine, so
each world size gets one pool of long-lived spawned workers; a test sends a
module-level function to every rank and gets each rank's return value back.
Every call is bounded in time and failures name the rank; a pool whose ranks
failed or timed out is torn down and rebuilt for the next test.

``RankPool(n, emulate_npu=True)``: the ranks run on the emulated Ascend device
(``NPU_SYNCBN_EMULATE_NPU=1``, backend "hccl"); scenarios put their tensors on
:func:`rank_device` and compare CPU copies with the same references.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import socket
import sys
import time
import traceback
from typing import Any, Callable, List

PG_TIMEOUT_S = 60  # a collective missing a rank errors after this
# Loopback transport failures that say nothing about the code under test.
TRANSPORT_ERRORS = ("connectFullMesh", "Connection refused", "Address already in use", "EADDRINUSE")
EMULATE_ENV = "NPU_SYNCBN_EMULATE_NPU"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_device():
    """Where a rank's tensors live: "npu" on the emulated device, else CPU."""
    import torch

    from npu_syncbn import emulation

    return torch.device("npu") if emulation.active() else torch.device("cpu")


def _worker(rank: int, world_size: int, port: int, tasks, results, emulate_npu: bool = False) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank), NPU_SYNCBN_TIMEOUT=str(PG_TIMEOUT_S),
    )
    # Read by `import npu_syncbn`; TORCH_EXTENSIONS_DIR (the device's build cache) is inherited.
    if emulate_npu:
        os.environ[EMULATE_ENV] = "1"
    else:
        os.environ.pop(EMULATE_ENV, None)
    import torch

    torch.set_num_threads(1)
    import npu_syncbn

    try:
        if emulate_npu and not npu_syncbn.emulation.active():
            raise RuntimeError(f"{EMULATE_ENV}=1 but the emulated npu device is not active")
        npu_syncbn.init(backend="hccl" if emulate_npu else "gloo")
    except Exception:
        results.put((rank, False, traceback.format_exc()))
        return
    while True:
        task = tasks.get()
        if task is None:
            break
        fn, args = task
        try:
            results.put((rank, True, fn(rank, world_size, *args)))
        except BaseException:
            results.put((rank, False, traceback.format_exc()))


class RankPool:
    """``world_size`` gloo ranks (or "hccl" ranks on the emulated npu device
    with ``emulate_npu``) that run functions sent to them."""

    def __init__(self, world_size: int, emulate_npu: bool = False) -> None:
        ctx = mp.get_context("spawn")
        self.world_size = world_size
        self.emulate_npu = emulate_npu
        self.results = ctx.Queue()
        self.tasks = [ctx.Queue() for _ in range(world_size)]
        port = free_port()
        self.procs = [
            ctx.Process(target=_worker, args=(r, world_size, port, self.tasks[r], self.results, emulate_npu),
                        daemon=True)
            for r in range(world_size)
        ]
        for p in self.procs:
            p.start()
        self.broken = False

    def run(self, fn: Callable[..., Any], *args: Any, timeout: float = 120.0) -> List[Any]:
        """Run ``fn(rank, world_size, *args)`` on every rank; return the values by rank.

        Raises AssertionError naming the ranks that failed (with their
        tracebacks) or did not answer within ``timeout`` seconds. A failure
        of the loopback transport itself (a port taken by another process
        between our pick and gloo's bind, a refused connection while a loaded
        machine sets up a group) restarts the ranks and tries once more,
        saying so on stderr; anything else fails the test."""
        try:
            return self._run_once(fn, args, timeout)
        except AssertionError as exc:
            if not any(sign in str(exc) for sign in TRANSPORT_ERRORS):
                raise
            print(f"dist_utils: transport error, restarting {self.world_size} ranks once:\n{exc}", file=sys.stderr)
            self.__init__(self.world_size, self.emulate_npu)
            return self._run_once(fn, args, timeout)

    def _run_once(self, fn: Callable[..., Any], args: tuple, timeout: float) -> List[Any]:
        for q in self.tasks:
            q.put((fn, args))
        values, failures = {}, {}
        deadline = time.monotonic() + timeout
        first_failure = float("inf")
        while len(values) + len(failures) < self.world_size:
            if failures:  # the others may now be stuck in a collective: don't wait long
                deadline = min(deadline, first_failure + 10.0)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:  # in slices, to notice a rank that died (a segfault sends no result)
                rank, ok, value = self.results.get(timeout=min(left, 1.0))
            except queue.Empty:
                for r, p in enumerate(self.procs):
                    if not p.is_alive() and r not in values and r not in failures:
                        failures[r] = f"the rank's process died with exit code {p.exitcode} (a crash: no traceback)"
                        first_failure = min(first_failure, time.monotonic())
                continue
            (values if ok else failures)[rank] = value
            if not ok:
                first_failure = min(first_failure, time.monotonic())
        missing = [r for r in range(self.world_size) if r not in values and r not in failures]
        if failures or missing:
            self.close()
            where = " (emulated npu, hccl)" if self.emulate_npu else ""
            msg = [f"{fn.__name__} on {self.world_size} ranks{where}:"]
            msg += [f"rank {r} failed:\n{tb}" for r, tb in sorted(failures.items())]
            if missing:
                msg.append(f"ranks {missing} did not finish within {timeout:.0f} s (hang or crash)")
            raise AssertionError("\n".join(msg))
        return [values[r] for r in range(self.world_size)]

    def close(self) -> None:
        self.broken = True
        for q in self.tasks:
            try:
                q.put(None)
            except Exception:
                pass
        for p in self.procs:
            p.join(timeout=2)
            if p.is_alive():
                p.kill()
                p.join(timeout=2)
