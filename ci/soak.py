"""Soak test: long 2-rank gloo training with SyncBatchNorm, checked for leaks and drift.

    python ci/soak.py                      # 1000 steps, checks from step 100
    python ci/soak.py --steps 150 --check-from 50 --sync-mode allreduce

Two spawned ranks train a small conv net (SyncBatchNorm after each conv,
DistributedDataParallel, SGD with momentum) on random data. Each rank records
its resident memory (VmRSS) and its number of open file descriptors at step
``--check-from`` and after the last step, and at the end the ranks gather their
running statistics. Checks, per rank:

* resident memory at the end within ``--rss-tolerance`` (default 5%) of the
  value at ``--check-from``;
* no more open file descriptors at the end than at ``--check-from``;
* running_mean, running_var and num_batches_tracked of every SyncBatchNorm
  bitwise identical on all ranks (torch.equal), with DDP's buffer broadcast
  off so that each rank's statistics are its own;
* every loss finite.

Prints one summary line per rank and exits 0 when every check passes, 1 when
one fails, 2 when a rank crashed or the run overran ``--timeout`` seconds.
Needs Linux (/proc); runs on CPU only.
"""
from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import queue
import socket
import sys
import time
import traceback

WORLD_SIZE = 2


def rss_kib() -> int:
    """Resident set size of this process in KiB (VmRSS in /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("VmRSS not found in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _build_model(sync_mode: str):
    import torch.nn as nn

    import npu_syncbn

    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10),
    )
    net = npu_syncbn.convert_sync_batchnorm(net)
    for m in net.modules():
        if isinstance(m, npu_syncbn.SyncBatchNorm):
            m.sync_mode = sync_mode
    return net


def _rank_main(rank: int, port: int, args, results) -> None:
    try:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE))
        import torch
        import torch.distributed as dist

        import npu_syncbn

        torch.set_num_threads(1)
        torch.manual_seed(0)  # same initial weights on every rank (DDP broadcasts them anyway)
        npu_syncbn.init(backend="gloo", timeout=60)
        # broadcast_buffers=False: DDP would otherwise copy rank 0's running
        # stats to every rank before each forward, hiding any disagreement.
        model = torch.nn.parallel.DistributedDataParallel(_build_model(args.sync_mode), broadcast_buffers=False)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()
        gen = torch.Generator().manual_seed(1000 + rank)
        nonfinite = 0
        mark = None
        start = time.monotonic()
        for step in range(1, args.steps + 1):
            x = torch.randn(args.batch, 3, 12, 12, generator=gen)
            target = torch.randint(0, 10, (args.batch,), generator=gen)
            loss = loss_fn(model(x), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not torch.isfinite(loss.detach()):
                nonfinite += 1
            if step == args.check_from:
                gc.collect()
                mark = (rss_kib(), open_fds())
        gc.collect()
        end = (rss_kib(), open_fds())
        elapsed = time.monotonic() - start

        bns = [m for m in model.module.modules() if isinstance(m, npu_syncbn.SyncBatchNorm)]
        stats = torch.cat([torch.cat([m.running_mean.double(), m.running_var.double(), m.num_batches_tracked.double().reshape(1)]) for m in bns])
        gathered = [torch.empty_like(stats) for _ in range(WORLD_SIZE)]
        dist.all_gather(gathered, stats)
        identical = all(torch.equal(g, gathered[0]) for g in gathered)
        tracked = [int(m.num_batches_tracked) for m in bns]
        dist.destroy_process_group()
        results.put((rank, True, {
            "rss_mark": mark[0], "rss_end": end[0], "fds_mark": mark[1], "fds_end": end[1],
            "identical": identical, "nonfinite": nonfinite, "tracked": tracked, "elapsed": elapsed,
            "last_loss": float(loss.detach()),
        }))
    except BaseException:
        results.put((rank, False, traceback.format_exc()))


def check(rank: int, r: dict, args) -> list:
    """Failed checks of one rank's record, as readable strings."""
    problems = []
    growth = (r["rss_end"] - r["rss_mark"]) / r["rss_mark"]
    if abs(growth) > args.rss_tolerance:
        problems.append(f"resident memory {r['rss_mark']} KiB at step {args.check_from} -> {r['rss_end']} KiB at the end "
                        f"({growth:+.1%}, limit ±{args.rss_tolerance:.0%})")
    if r["fds_end"] > r["fds_mark"]:
        problems.append(f"open file descriptors grew from {r['fds_mark']} to {r['fds_end']}")
    if not r["identical"]:
        problems.append("running statistics differ between ranks (not bitwise identical)")
    if r["nonfinite"]:
        problems.append(f"{r['nonfinite']} steps had a non-finite loss")
    if any(t != args.steps for t in r["tracked"]):
        problems.append(f"num_batches_tracked {r['tracked']} != {args.steps}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps (default 1000)")
    parser.add_argument("--check-from", type=int, default=100, help="step whose memory and fd count are the baseline (default 100)")
    parser.add_argument("--batch", type=int, default=4, help="per-rank batch size (default 4)")
    parser.add_argument("--sync-mode", default="auto", choices=["auto", "allgather", "allreduce"])
    parser.add_argument("--rss-tolerance", type=float, default=0.05, help="allowed relative RSS change (default 0.05)")
    parser.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds (default 1800)")
    args = parser.parse_args(argv)
    if not 1 <= args.check_from < args.steps:
        parser.error(f"--check-from must be in [1, --steps), got {args.check_from} with --steps {args.steps}")
    if not sys.platform.startswith("linux"):
        parser.error("the soak test reads /proc: Linux only")

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, port, args, results), daemon=True) for r in range(WORLD_SIZE)]
    for p in procs:
        p.start()
    records, crashes = {}, {}
    deadline = time.monotonic() + args.timeout
    while len(records) + len(crashes) < WORLD_SIZE:
        left = deadline - time.monotonic()
        if crashes:
            left = min(left, 10.0)
        try:
            rank, ok, value = results.get(timeout=max(left, 0.01))
        except queue.Empty:
            break
        (records if ok else crashes)[rank] = value
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join()
    print(f"soak: {WORLD_SIZE} ranks, {args.steps} steps, sync_mode {args.sync_mode}, baseline at step {args.check_from}")
    missing = [r for r in range(WORLD_SIZE) if r not in records and r not in crashes]
    for rank, tb in sorted(crashes.items()):
        print(f"soak: rank {rank} crashed:\n{tb}")
    if missing:
        print(f"soak: ranks {missing} did not finish within {args.timeout:.0f}s")
    if crashes or missing:
        return 2
    failed = False
    for rank in range(WORLD_SIZE):
        r = records[rank]
        problems = check(rank, r, args)
        failed |= bool(problems)
        print(f"soak: rank {rank}: {r['elapsed']:.1f}s ({1000 * r['elapsed'] / args.steps:.1f} ms/step), "
              f"RSS {r['rss_mark']} -> {r['rss_end']} KiB, fds {r['fds_mark']} -> {r['fds_end']}, "
              f"running stats identical: {r['identical']}, last loss {r['last_loss']:.4f}: "
              + ("OK" if not problems else "FAILED"))
        for p in problems:
            print(f"soak:   rank {rank}: {p}")
    print("soak: " + ("FAILED" if failed else "passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
